"""The shipped default encoder ``smollm2-135m-llm2vec``: the default GGUF plus LoRA adapters trained by the
``cpu-2h`` LLM2Vec recipe (MNTP, then unsupervised SimCSE, on the offline Wikipedia corpus).

The adapters ship inside the package (``resources/encoders/smollm2-135m-llm2vec/``, fp16 safetensors) with
``recipe.json``: how they were made (recipe, data, steps, scores) and the SHA-256 of every file. On first use
the encoder is built — default model, bidirectional, adapters merged in order — and cached as a saved
encoder folder, atomically (concurrent first uses race safely; the first finished copy wins).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np

from decoder2vec.backbone.cache import cache_home, is_cached
from decoder2vec.backbone.default_model import DEFAULT_ENCODER, DEFAULT_MODEL
from decoder2vec.encoder_config import (
    ENCODER_CONFIG,
    check_pooling_mode,
    default_max_length,
    write_encoder_files,
)
from decoder2vec.errors import ModelLoadError
from decoder2vec.io import publish_folder

ENCODER_ALIAS = DEFAULT_ENCODER
MANIFEST = "recipe.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def shipped_dir() -> Path:
    """The folder of the shipped adapters inside the installed package."""
    return Path(str(resources.files("decoder2vec").joinpath("resources", "encoders", ENCODER_ALIAS)))


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_manifest(source: Path) -> dict:
    """``recipe.json`` of an adapter bundle, with every listed file checked against its SHA-256.

    A missing, truncated or altered file is a :class:`ModelLoadError` naming it (before any model loads).
    """
    path = source / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        adapters = manifest["adapters"]
    except FileNotFoundError:
        raise ModelLoadError(
            f"the encoder bundle {source} has no {MANIFEST}; reinstall decoder2vec"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path} is damaged ({exc}); reinstall decoder2vec") from None
    files = [(source / a["path"] / name, digest) for a in adapters for name, digest in a["sha256"].items()]
    if manifest.get("calibration"):  # the int8 calibration sample, when the bundle ships one
        files.append((source / manifest["calibration"]["path"], manifest["calibration"]["sha256"]))
    for file, expected in files:
        if not file.is_file():
            raise ModelLoadError(f"encoder file {file} is missing; reinstall decoder2vec")
        if sha256(file) != expected:
            raise ModelLoadError(
                f"encoder file {file} is corrupt (its SHA-256 differs from {path}); reinstall decoder2vec"
            )
    return manifest


def default_encoder_folder(source: Path | None = None) -> Path:
    """The built encoder, building and caching it on first use.

    ``source`` is an adapter bundle folder (default: the shipped one). The cache name carries a digest of
    the adapters' hashes, so a new release of the adapters never reuses an old build.
    """
    from decoder2vec.backbone.loading import load_backbone, save_backbone  # loading imports this module

    source = Path(source) if source is not None else shipped_dir()
    manifest = read_manifest(source)
    # what the build depends on (the adapter hashes and the encoder settings), not the recorded scores
    built_from = [manifest["adapters"], manifest.get("encoder", {})]
    if manifest.get("calibration"):  # (bundles without one keep their old cache name)
        built_from.append(manifest["calibration"])
    built_from = json.dumps(built_from, sort_keys=True)
    digest = hashlib.sha256(built_from.encode()).hexdigest()[:12]
    folder = cache_home() / "models" / f"{ENCODER_ALIAS}-{digest}"
    if is_cached(folder, ENCODER_CONFIG):
        return folder

    def build(tmp: Path) -> None:
        settings = manifest.get("encoder", {})
        model, tokenizer = load_backbone(
            DEFAULT_MODEL,
            adapters=[source / adapter["path"] for adapter in manifest["adapters"]],
            bidirectional=True,
            dtype="float32",
            device="cpu",
        )
        save_backbone(model, tokenizer, tmp)
        calibration = manifest.get("calibration")
        write_encoder_files(
            tmp,
            {
                "pooling": check_pooling_mode(settings.get("pooling", "mean")),
                "max_length": settings.get("max_length") or default_max_length(model.config),
                "bidirectional": True,
                "matryoshka_dimensions": settings.get("matryoshka_dimensions"),
            },
            int(model.config.hidden_size),
            np.load(source / calibration["path"], allow_pickle=False) if calibration else None,
        )

    return publish_folder(folder, build)
