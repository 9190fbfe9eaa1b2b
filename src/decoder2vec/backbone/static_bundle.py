"""The shipped static model ``smollm2-135m-llm2vec-static``, rebuilt on first use from a small bundle.

The bundle (``resources/encoders/smollm2-135m-llm2vec-static/``) holds the token vectors that
``decoder2vec export static`` distilled from the shipped encoder, as per-row int8 (``vectors.safetensors``:
``q`` and ``scale``, a quarter of float32's size), and ``recipe.json`` (how they were made, their scores, the
SHA-256 of the vectors). On first use they are expanded to float32 and written, with the default model's
tokenizer, as a model2vec folder in the cache (atomically), which every static loader reads.
"""

from __future__ import annotations

from pathlib import Path

from decoder2vec.backbone.bundles import MANIFEST, built_folder, read_bundle_manifest, shipped_dir
from decoder2vec.backbone.default_model import STATIC_ENCODER, default_model_folder
from decoder2vec.static_format import CONFIG, TOKENIZER, dequantize_rows, vocab_tokenizer, write_static_files

__all__ = ["MANIFEST", "VECTORS", "read_static_manifest", "static_encoder_folder"]

VECTORS = "vectors.safetensors"


def read_static_manifest(source: Path) -> dict:
    """``recipe.json`` of the bundle, with the vectors file checked against its SHA-256."""
    return read_bundle_manifest(
        source,
        bundle="static",
        kind="static model file",
        files=lambda manifest: [(source / VECTORS, manifest["vectors"]["sha256"])],
    )


def static_encoder_folder(source: Path | None = None) -> Path:
    """The built static model folder, building and caching it on first use (named by the vectors' digest)."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    source = Path(source) if source is not None else shipped_dir(STATIC_ENCODER)
    manifest = read_static_manifest(source)

    def build(tmp: Path) -> None:
        stored = load_file(str(source / VECTORS))
        tokenizer = vocab_tokenizer(Tokenizer.from_file(str(default_model_folder() / TOKENIZER)))
        write_static_files(tmp, dequantize_rows(stored["q"], stored["scale"]), tokenizer, manifest["meta"])

    return built_folder(manifest.get("alias", STATIC_ENCODER), manifest["vectors"]["sha256"], CONFIG, build)
