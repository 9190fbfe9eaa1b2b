"""The output folder's ``manifest.json``: what was embedded, how, and whether it is complete.

The manifest is written (atomically) before the first shard and rewritten with ``complete: true``
after the last. A re-run compares its settings and input fingerprints with the folder's manifest
and refuses, naming each difference, rather than mixing two runs' embeddings in one folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from decoder2vec.corpus.inputs import Corpus
from decoder2vec.errors import OutputExistsError
from decoder2vec.io import write_json_atomic

MANIFEST = "manifest.json"
# /2: shards in data/, a record per finished shard in done/. /1 had the shards beside the manifest;
# such a folder is adopted (its shards moved into data/) when a run resumes it.
FORMAT = "decoder2vec-corpus/2"
OLD_FORMATS = ("decoder2vec-corpus/1",)
# --chunking runs only: recorded then, and compared as None for a run without chunking.
CHUNK_SETTINGS = ("chunking", "chunk_by", "chunk_size", "chunk_overlap")
# Settings known before the model loads (checked first, so a mismatch costs no model load) ...
INPUT_SETTINGS = (
    "model",
    "instruction",
    "normalize",
    "dimensions",
    "precision",
    "field",
    "id_field",
    "shard_size",
    "dtype",
    "quantization",
    *CHUNK_SETTINGS,
)
# ... and those the model's files decide (read without loading weights).
MODEL_SETTINGS = ("pooling", "dimension", "max_length", "model_fingerprint")
# Recorded since a later version: a folder written before then is not refused for lacking them ...
ADDED_SETTINGS = ("model_fingerprint",)
# ... or, for these, is compared as if it had recorded the value every run before then used.
ADDED_DEFAULTS = {
    "dimensions": None,
    "precision": "float32",
    "dtype": None,
    "quantization": None,
    **dict.fromkeys(CHUNK_SETTINGS),
}


def new_manifest(corpus: Corpus, shard_count: int, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "settings": settings,
        "rows": len(corpus),
        "shards": shard_count,
        "inputs": [f.as_dict() for f in corpus.files],
        "complete": False,
    }


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of an existing output folder; ``None`` for a missing or empty folder.

    A folder with other content, or a manifest decoder2vec did not write, is an error: nothing
    is ever written into a folder we did not make.
    """
    if not out.exists():
        return None
    if not out.is_dir():
        raise OutputExistsError(f"--out {out} exists and is not a folder")
    path = out / MANIFEST
    if not path.is_file():
        if any(out.iterdir()):
            raise OutputExistsError(
                f"--out {out} is not empty and has no {MANIFEST}: it was not made by embed-corpus; "
                "choose a new or empty folder"
            )
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OutputExistsError(
            f"{path} is not valid JSON ({exc}); it was not written by embed-corpus"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") not in (FORMAT, *OLD_FORMATS):
        raise OutputExistsError(f"{path} was not written by embed-corpus (format {FORMAT!r} expected)")
    return manifest


def check_same_run(out: Path, old: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Raise naming every difference between an existing run and this one, in ``keys`` and the inputs."""
    recorded = {**ADDED_DEFAULTS, **old["settings"]}
    differences = [
        f"{key} {recorded.get(key)!r} (now {new['settings'].get(key)!r})"
        for key in keys
        if recorded.get(key) != new["settings"].get(key)
        and not (key in ADDED_SETTINGS and key not in recorded)
    ]
    if "inputs" in new:
        differences += _input_differences(old.get("inputs", []), new["inputs"])
    if differences:
        raise OutputExistsError(
            f"--out {out} holds embeddings made with other settings: {'; '.join(differences)}. "
            "Nothing was changed; use another --out folder, or delete this one to start over"
        )


def _input_differences(old: list[dict], new: list[dict]) -> list[str]:
    old_by_path = {f["path"]: f for f in old}
    new_by_path = {f["path"]: f for f in new}
    notes = [f"input {p} is new" for p in new_by_path if p not in old_by_path]
    notes += [f"input {p} is missing" for p in old_by_path if p not in new_by_path]
    notes += [
        f"input {p} changed (sha256 {old_by_path[p]['sha256'][:12]}…, now {f['sha256'][:12]}…)"
        for p, f in new_by_path.items()
        if p in old_by_path and old_by_path[p]["sha256"] != f["sha256"]
    ]
    return notes


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(out / MANIFEST, manifest)
