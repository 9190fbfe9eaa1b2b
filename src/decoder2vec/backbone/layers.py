"""Cutting a decoder to its first N layers: a distilled student starts as its teacher's lower layers, and a
shipped student bundle is rebuilt the same way (so this lives below both training and the bundles)."""

from __future__ import annotations

from torch import nn

from decoder2vec.backbone.bidirectional import backbone_of
from decoder2vec.errors import SettingError


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a bare transformer (or a causal-LM / PEFT wrapper of one)."""
    layers = getattr(backbone_of(model), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise SettingError(f"{type(backbone_of(model)).__name__} has no decoder layer list (.layers) to cut")
    return layers


def truncate_layers(model: nn.Module, n: int) -> nn.Module:
    """Keep the first ``n`` decoder layers of ``model`` (in place; returned for chaining).

    Everything else stays as it was: embeddings, the final norm (now applied to layer ``n``'s output) and
    the kept layers' weights. The config is cut with them (``num_hidden_layers`` and per-layer lists such as
    ``layer_types``), so the saved model reloads as an ``n``-layer model.
    """
    backbone = backbone_of(model)
    layers = decoder_layers(model)
    if not 1 <= n <= len(layers):
        raise SettingError(
            f"student_layers must be between 1 and {len(layers)} (the model's layers), got {n}"
        )
    backbone.layers = nn.ModuleList(list(layers)[:n])
    config = backbone.config
    for key, value in list(vars(config).items()):
        # per-layer settings (layer_types, and e.g. no_rope_layers of some families) are cut with the layers
        if "layer" in key and isinstance(value, list) and len(value) == len(layers):
            setattr(config, key, value[:n])
    config.num_hidden_layers = n
    if isinstance(getattr(config, "max_window_layers", None), int):
        config.max_window_layers = min(config.max_window_layers, n)
    return model
