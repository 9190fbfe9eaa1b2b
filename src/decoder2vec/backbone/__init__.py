"""Stage 1: get a decoder backbone (any source) and switch its attention to bidirectional."""

from decoder2vec.backbone.bidirectional import set_bidirectional, verify_attention
from decoder2vec.backbone.loading import load_backbone, resolve_model_path

__all__ = ["load_backbone", "resolve_model_path", "set_bidirectional", "verify_attention"]
