"""Stage 1: get a decoder backbone (any source) and switch its attention to bidirectional."""

from typing import Any

__all__ = ["load_backbone", "resolve_model_path", "set_bidirectional", "verify_attention"]


def __getattr__(name: str) -> Any:
    # On first use: the torch-free modules here (the alias registry, the GGUF reader, the cache) are imported
    # by decoder2vec.spec, which must not import torch.
    if name in ("load_backbone", "resolve_model_path"):
        from decoder2vec.backbone import loading

        return getattr(loading, name)
    if name in ("set_bidirectional", "verify_attention"):
        from decoder2vec.backbone import bidirectional

        return getattr(bidirectional, name)
    raise AttributeError(f"module 'decoder2vec.backbone' has no attribute {name!r}")
