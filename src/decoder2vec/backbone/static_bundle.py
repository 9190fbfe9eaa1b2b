"""The shipped static model ``smollm2-135m-llm2vec-static``, rebuilt on first use from a small bundle.

The bundle (``resources/encoders/smollm2-135m-llm2vec-static/``) holds the token vectors that
``decoder2vec export static`` distilled from the shipped encoder, as per-row int8 (``vectors.safetensors``:
``q`` and ``scale``, a quarter of float32's size), and ``recipe.json`` (how they were made, their scores, the
SHA-256 of the vectors). On first use they are expanded to float32 and written, with the default model's
tokenizer, as a model2vec folder in the cache (atomically), which every static loader reads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from decoder2vec.backbone.cache import cache_home, is_cached
from decoder2vec.backbone.default_encoder import MANIFEST, sha256, shipped_dir
from decoder2vec.backbone.default_model import STATIC_ENCODER, default_model_folder
from decoder2vec.errors import ModelLoadError
from decoder2vec.io import publish_folder
from decoder2vec.static_format import CONFIG, TOKENIZER, dequantize_rows, vocab_tokenizer, write_static_files

VECTORS = "vectors.safetensors"


def read_static_manifest(source: Path) -> dict:
    """``recipe.json`` of the bundle, with the vectors file checked against its SHA-256."""
    path = source / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        expected = manifest["vectors"]["sha256"]
    except FileNotFoundError:
        raise ModelLoadError(f"the static bundle {source} has no {MANIFEST}; reinstall decoder2vec") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path} is damaged ({exc}); reinstall decoder2vec") from None
    file = source / VECTORS
    if not file.is_file():
        raise ModelLoadError(f"static model file {file} is missing; reinstall decoder2vec")
    if sha256(file) != expected:
        raise ModelLoadError(
            f"static model file {file} is corrupt (its SHA-256 differs from {path}); reinstall"
        )
    return manifest


def static_encoder_folder(source: Path | None = None) -> Path:
    """The built static model folder, building and caching it on first use (named by the vectors' digest)."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    source = Path(source) if source is not None else shipped_dir(STATIC_ENCODER)
    manifest = read_static_manifest(source)
    digest = hashlib.sha256(manifest["vectors"]["sha256"].encode()).hexdigest()[:12]
    folder = cache_home() / "models" / f"{manifest.get('alias', STATIC_ENCODER)}-{digest}"
    if is_cached(folder, CONFIG):
        return folder

    def build(tmp: Path) -> None:
        stored = load_file(str(source / VECTORS))
        tokenizer = vocab_tokenizer(Tokenizer.from_file(str(default_model_folder() / TOKENIZER)))
        write_static_files(tmp, dequantize_rows(stored["q"], stored["scale"]), tokenizer, manifest["meta"])

    return publish_folder(folder, build)
