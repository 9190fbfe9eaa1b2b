"""What every shipped bundle shares (``resources/encoders/<alias>/``): its ``recipe.json`` checked file by
file against the SHA-256 it records, and the cache folder it is built into once, atomically.

The adapter bundles (:mod:`decoder2vec.backbone.default_encoder`) and the static bundle
(:mod:`decoder2vec.backbone.static_bundle`) differ only in which files they list and what they build.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from decoder2vec.backbone.cache import cache_home, is_cached
from decoder2vec.backbone.default_model import DEFAULT_ENCODER
from decoder2vec.errors import ModelLoadError
from decoder2vec.io import publish_folder

MANIFEST = "recipe.json"


def shipped_dir(alias: str = DEFAULT_ENCODER) -> Path:
    """The bundle folder of a shipped encoder inside the installed package."""
    return Path(str(resources.files("decoder2vec").joinpath("resources", "encoders", alias)))


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_bundle_manifest(
    source: Path, *, bundle: str, kind: str, files: Callable[[dict], list[tuple[Path, str]]]
) -> dict:
    """``recipe.json`` of the bundle ``source``, with every ``(file, sha256)`` that ``files(manifest)``
    lists checked (before any model loads).

    A missing or damaged manifest, a missing key, and a missing, truncated or altered file are each a
    :class:`ModelLoadError` naming it; ``bundle`` and ``kind`` name the bundle and its files in messages
    (``"encoder"``, ``"static"``; ``"encoder file"``, ``"static model file"``).
    """
    path = source / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        listed = files(manifest)
    except FileNotFoundError:
        raise ModelLoadError(
            f"the {bundle} bundle {source} has no {MANIFEST}; reinstall decoder2vec"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path} is damaged ({exc}); reinstall decoder2vec") from None
    for file, expected in listed:
        if not file.is_file():
            raise ModelLoadError(f"{kind} {file} is missing; reinstall decoder2vec")
        if sha256(file) != expected:
            raise ModelLoadError(
                f"{kind} {file} is corrupt (its SHA-256 differs from {path}); reinstall decoder2vec"
            )
    return manifest


def built_folder(name: str, built_from: str, marker: str, build: Callable[[Path], None]) -> Path:
    """The cache folder ``models/<name>-<digest>`` (``digest``: 12 hex digits of the SHA-256 of
    ``built_from``, what the build depends on), built by ``build(tmp)`` and published atomically unless
    it already holds ``marker`` (concurrent first uses race safely; the first finished copy wins)."""
    digest = hashlib.sha256(built_from.encode()).hexdigest()[:12]
    folder = cache_home() / "models" / f"{name}-{digest}"
    if is_cached(folder, marker):
        return folder
    return publish_folder(folder, build)
