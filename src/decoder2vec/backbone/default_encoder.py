"""The shipped encoders, rebuilt on first use from small bundles inside the package.

``smollm2-135m-llm2vec``: the default GGUF plus LoRA adapters trained by the ``cpu-2h`` LLM2Vec recipe
(MNTP, then unsupervised SimCSE, on the offline Wikipedia corpus). ``smollm2-135m-llm2vec-14l`` and
``-10l``: students distilled from it (``train distill --student-layers 14|10 --projection``): the teacher
cut to its first layers (``"layers"``), the student's LoRA merged, and the projection after pooling.

Each bundle (``resources/encoders/<alias>/``, fp16 adapter safetensors) holds ``recipe.json``: how it was
made (recipe, data, steps, scores) and the SHA-256 of every file. On first use the encoder is built — its
base (the default model, or another shipped encoder), bidirectional, cut if the bundle says so, adapters
merged in order — and cached as a saved encoder folder, atomically (concurrent first uses race safely; the
first finished copy wins).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from decoder2vec.backbone.bundles import MANIFEST, built_folder, read_bundle_manifest, sha256, shipped_dir
from decoder2vec.backbone.default_model import (
    DEFAULT_ENCODER,
    DEFAULT_MODEL,
    SHIPPED_ENCODERS,
    default_model_folder,
)
from decoder2vec.encoder_config import (
    ENCODER_CONFIG,
    check_pooling_mode,
    default_max_length,
    read_projection_file,
    write_encoder_files,
)
from decoder2vec.errors import ModelLoadError

__all__ = [
    "ADAPTER_FILES",
    "ENCODER_ALIAS",
    "MANIFEST",
    "default_encoder_folder",
    "read_manifest",
    "sha256",
    "shipped_dir",
]

ENCODER_ALIAS = DEFAULT_ENCODER
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _listed_files(source: Path, manifest: dict) -> list[tuple[Path, str]]:
    files = [
        (source / a["path"] / name, digest)
        for a in manifest["adapters"]
        for name, digest in a["sha256"].items()
    ]
    for extra in ("calibration", "projection"):  # the int8 sample and a student's map, when shipped
        if manifest.get(extra):
            files.append((source / manifest[extra]["path"], manifest[extra]["sha256"]))
    return files


def read_manifest(source: Path) -> dict:
    """``recipe.json`` of an adapter bundle, with every listed file checked against its SHA-256.

    A missing, truncated or altered file is a :class:`ModelLoadError` naming it (before any model loads).
    """
    return read_bundle_manifest(
        source, bundle="encoder", kind="encoder file", files=lambda manifest: _listed_files(source, manifest)
    )


def default_encoder_folder(source: Path | None = None) -> Path:
    """The built encoder, building and caching it on first use.

    ``source`` is a bundle folder (default: the shipped ``smollm2-135m-llm2vec``). The cache name carries a
    digest of what the build depends on (adapter hashes, settings, the base's own build), so a new release
    of a bundle never reuses an old build.
    """
    source = Path(source) if source is not None else shipped_dir()
    manifest = read_manifest(source)
    layers = manifest.get("layers")  # a student: its base (another shipped encoder) cut to this many layers
    base = manifest.get("base", DEFAULT_MODEL)
    if layers is not None and base not in SHIPPED_ENCODERS:
        raise ModelLoadError(f"{source / MANIFEST}: a cut student's base must be one of {SHIPPED_ENCODERS}")
    base_folder = default_encoder_folder(shipped_dir(base)) if layers is not None else None
    # what the build depends on (the adapter hashes and the encoder settings), not the recorded scores
    built_from = [manifest["adapters"], manifest.get("encoder", {})]
    for extra in ("calibration", "projection"):  # (bundles without them keep their old cache name)
        if manifest.get(extra):
            built_from.append(manifest[extra])
    if base_folder is not None:
        built_from.append({"base": base_folder.name, "layers": layers})
    built_from = json.dumps(built_from, sort_keys=True)

    def build(tmp: Path) -> None:  # (torch only here: a built encoder resolves without it)
        from decoder2vec.backbone.adapters import merge_adapters
        from decoder2vec.backbone.layers import truncate_layers
        from decoder2vec.backbone.model_io import load_from_path, save_backbone

        settings = manifest.get("encoder", {})
        adapters = [source / adapter["path"] for adapter in manifest["adapters"]]
        if base_folder is None:
            model, tokenizer = load_from_path(
                str(default_model_folder()),
                adapters=adapters,
                bidirectional=True,
                dtype="float32",
                device="cpu",
            )
        else:  # the student's LoRA was trained on the cut teacher: cut first, then merge it
            model, tokenizer = load_from_path(
                str(base_folder), bidirectional=True, dtype="float32", device="cpu"
            )
            model = merge_adapters(truncate_layers(model, int(layers)), adapters)
        save_backbone(model, tokenizer, tmp)
        calibration, projection = manifest.get("calibration"), manifest.get("projection")
        weight = (
            read_projection_file(source / projection["path"], remedy="reinstall decoder2vec")
            if projection
            else None
        )
        write_encoder_files(
            tmp,
            {
                "pooling": check_pooling_mode(settings.get("pooling", "mean")),
                "max_length": settings.get("max_length") or default_max_length(model.config),
                "bidirectional": True,
                "matryoshka_dimensions": settings.get("matryoshka_dimensions"),
            },
            int(weight.shape[0]) if weight is not None else int(model.config.hidden_size),
            np.load(source / calibration["path"], allow_pickle=False) if calibration else None,
            weight,
        )

    return built_folder(manifest.get("alias", ENCODER_ALIAS), built_from, ENCODER_CONFIG, build)
