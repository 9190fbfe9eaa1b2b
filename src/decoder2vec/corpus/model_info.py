"""What a model will produce (pooling, dimension, token limit), read from its config without loading weights.

The manifest needs these before any shard is written; reading them from config files lets a
mismatch fail before a model loads, and lets the Ray driver skip loading a model it never runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decoder2vec.errors import ConfigError, ModelLoadError


def model_identity(model: str) -> str:
    """The string the manifest records and every worker loads: an absolute path for local files."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def describe_model(model: str, pooling: str | None = None, max_length: int | None = None) -> dict[str, Any]:
    """``{"pooling", "dimension", "max_length"}`` as ``Encoder.from_pretrained`` would set them."""
    from transformers import AutoConfig

    from decoder2vec.backbone.loading import resolve_model_path
    from decoder2vec.encoding.encoder import DEFAULTS, default_max_length, model_context, read_encoder_config
    from decoder2vec.encoding.pooling import check_pooling_mode

    path = resolve_model_path(model)
    saved = read_encoder_config(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the model config of {model}: {exc}") from None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    try:
        pooling = check_pooling_mode(
            pooling if pooling is not None else saved.get("pooling", DEFAULTS["pooling"])
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    context = model_context(text_config)
    if max_length is None:  # as Encoder does: the saved setting, else the default capped at the context
        max_length = saved.get("max_length") or default_max_length(text_config)
    if max_length < 1 or (context is not None and max_length > context):
        raise ConfigError(
            f"--max-length {max_length} must be between 1 and the model's context of {context} tokens"
        )
    return {"pooling": pooling, "dimension": int(text_config.hidden_size), "max_length": int(max_length)}


def check_encoder(encoder, expected: dict[str, Any]) -> None:
    """Refuse to embed when the loaded encoder differs from what the manifest records."""
    actual = {
        "pooling": encoder.pooling,
        "dimension": encoder.embedding_dim,
        "max_length": encoder.max_length,
    }
    wrong = [
        f"{key} {actual[key]!r} (manifest: {expected[key]!r})"
        for key in actual
        if actual[key] != expected[key]
    ]
    if wrong:
        raise ModelLoadError(f"the loaded model does not match the manifest: {'; '.join(wrong)}")
