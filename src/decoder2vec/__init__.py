"""decoder2vec: turn decoder-only LLMs into bidirectional text encoders (LLM2Vec, done carefully)."""

from typing import Any

__all__ = ["Encoder", "mteb_model"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Encoder on first use, so `import decoder2vec.spec` (describing an encoder) does not import torch.
    if name == "Encoder":
        from decoder2vec.encoding.encoder import Encoder

        return Encoder
    raise AttributeError(f"module 'decoder2vec' has no attribute {name!r}")


def mteb_model(model_or_encoder: Any, **kwargs: Any) -> Any:
    """An ``mteb`` encoder for ``mteb.evaluate`` (needs the optional extra: ``pip install decoder2vec[mteb]``)."""
    from decoder2vec.evaluation import mteb_model as make

    return make(model_or_encoder, **kwargs)
