"""decoder2vec: turn decoder-only LLMs into bidirectional text encoders (LLM2Vec, done carefully)."""

from typing import Any

from decoder2vec.encoding.encoder import Encoder

__all__ = ["Encoder", "mteb_model"]
__version__ = "0.1.0"


def mteb_model(model_or_encoder: Any, **kwargs: Any) -> Any:
    """An ``mteb`` encoder for ``mteb.evaluate`` (needs the optional extra: ``pip install decoder2vec[mteb]``)."""
    from decoder2vec.evaluation import mteb_model as make

    return make(model_or_encoder, **kwargs)
