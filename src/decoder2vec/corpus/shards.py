"""Shard planning, atomic Parquet shard writes with a finish record, and their verification.

Shard ``k`` holds records ``[k * size, (k + 1) * size)`` of the corpus in input order, so a plan is
a pure function of the inputs and the shard size. Layout of an output folder::

    manifest.json            what was embedded and how (see manifest.py)
    data/part-00000.parquet  the shards, and nothing else: ``pq.read_table(out / "data")`` reads them all
    done/part-00000.json     one record per finished shard: its rows, size and sha256

A shard is written to a temporary sibling and renamed into place, then its record is written the same
way. A shard counts as finished only if its record exists and its file still matches it (size and
sha256), so a truncated, edited or half-copied shard is embedded again, never trusted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from decoder2vec.corpus.inputs import read_parquet
from decoder2vec.io import write_file_atomic, write_json_atomic

SHARD_PREFIX = "part-"
SHARD_SUFFIX = ".parquet"
DATA_DIR = "data"
DONE_DIR = "done"
# Arrow types of the embedding values, by numpy dtype (float32, or the compact int8/uint8 encodings).
VALUE_TYPES = ("float32", "int8", "uint8")


def shard_name(index: int) -> str:
    return f"{SHARD_PREFIX}{index:05d}{SHARD_SUFFIX}"


def shard_path(out: Path, index: int) -> Path:
    return out / DATA_DIR / shard_name(index)


def record_path(out: Path, index: int) -> Path:
    return out / DONE_DIR / f"{SHARD_PREFIX}{index:05d}.json"


def plan_shards(rows: int, shard_size: int) -> list[range]:
    """The row ranges of the shards of a corpus of ``rows`` records."""
    return [range(start, min(start + shard_size, rows)) for start in range(0, rows, shard_size)]


def pending_shards(out: Path, plan: list[range]) -> tuple[list[int], list[str]]:
    """Indices of the planned shards not verifiably finished, and a note for each shard file that
    exists but cannot be trusted (it will be embedded again)."""
    pending, notes = [], []
    for index, rows in enumerate(plan):
        problem = shard_problem(out, index, len(rows))
        if problem is not None:
            pending.append(index)
            if shard_path(out, index).exists():
                notes.append(f"{DATA_DIR}/{shard_name(index)} {problem}: embedding it again")
    return pending, notes


def shard_problem(out: Path, index: int, rows: int) -> str | None:
    """Why shard ``index`` is not a finished shard of ``rows`` rows, or ``None`` if it is."""
    path = shard_path(out, index)
    if not path.is_file():
        return "is missing"
    record = record_path(out, index)
    if not record.is_file():
        return "has no record of being finished (a run stopped while writing it, or it was copied in)"
    try:
        done = json.loads(record.read_text(encoding="utf-8"))
        expected = (int(done["rows"]), int(done["bytes"]), str(done["sha256"]))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return f"has an unreadable record {DONE_DIR}/{record.name} ({exc})"
    if expected[0] != rows:
        return f"was recorded with {expected[0]} rows, but the shard has {rows}"
    size = path.stat().st_size
    if size != expected[1]:
        return f"is {size} bytes, but {expected[1]} were written (truncated or replaced since)"
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if digest != expected[2]:
        return "does not match the sha256 recorded when it was written (changed since)"
    return None


def remove_partial_files(out: Path) -> None:
    """Delete temporary files left by a process killed while writing (``write_file_atomic`` names)."""
    patterns = [
        (out / DATA_DIR, f".{SHARD_PREFIX}*{SHARD_SUFFIX}.*"),
        (out / DONE_DIR, f".{SHARD_PREFIX}*.json.*"),
        (out, f".{SHARD_PREFIX}*{SHARD_SUFFIX}.*"),  # the layout before data/
    ]
    for folder, pattern in patterns:
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)


def adopt_old_layout(out: Path, plan: list[range]) -> int:
    """Move the shards of a folder written before ``data/`` existed (``out/part-*.parquet``) into
    ``data/``, recording those that read back whole (a Parquet footer with the planned row count).

    Only the planned shard names are moved: anything else in ``out`` is left where it is. A shard that
    does not read back gets no record, so it is embedded again. Returns the number moved.
    """
    import pyarrow.parquet as pq

    moved = 0
    for index, rows in enumerate(plan):
        old = out / shard_name(index)
        if not old.is_file():
            continue
        new = shard_path(out, index)
        new.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old, new)
        moved += 1
        try:
            readable = pq.read_metadata(new).num_rows == len(rows)
        except Exception:  # noqa: BLE001 - any failure to read the footer means "not a whole shard"
            readable = False
        if readable:
            _write_record(out, index, len(rows), new.read_bytes())
    return moved


def shard_table(ids: list[str], embeddings: np.ndarray):
    """An Arrow table with ``id`` (string) and ``embedding`` (fixed-size list of the embeddings' dtype:
    float32, or int8/uint8 for compact precisions; anything else is stored as float32)."""
    import pyarrow as pa

    embeddings = np.asarray(embeddings)
    if embeddings.dtype.name not in VALUE_TYPES:
        embeddings = embeddings.astype(np.float32)
    embeddings = np.ascontiguousarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(ids):
        raise ValueError(f"expected {len(ids)} embeddings, got an array of shape {embeddings.shape}")
    dim = embeddings.shape[1]
    values = pa.array(embeddings.reshape(-1), type=pa.from_numpy_dtype(embeddings.dtype))
    return pa.table(
        {"id": pa.array(ids, type=pa.string()), "embedding": pa.FixedSizeListArray.from_arrays(values, dim)}
    )


def write_shard(out: Path, index: int, ids: list[str], embeddings: np.ndarray) -> Path:
    """Write shard ``index`` atomically, then its record; return the shard's path."""
    return _write_table(out, index, shard_table(ids, embeddings), len(ids))


def chunk_table(doc_ids: list[str], spans: list[list[tuple[int, int]]], embeddings: np.ndarray):
    """One row per chunk: ``id`` (its document's), ``chunk`` (index within the document, int32),
    ``start`` and ``end`` (character offsets into the document text, int64: ``text[start:end]`` is the
    chunk), then ``embedding`` as in :func:`shard_table`. ``spans`` holds each document's chunk spans."""
    import pyarrow as pa

    ids = [doc_id for doc_id, doc in zip(doc_ids, spans, strict=True) for _ in doc]
    table = shard_table(ids, embeddings)
    columns = {
        "chunk": pa.array([k for doc in spans for k in range(len(doc))], type=pa.int32()),
        "start": pa.array([a for doc in spans for a, _ in doc], type=pa.int64()),
        "end": pa.array([b for doc in spans for _, b in doc], type=pa.int64()),
    }
    for position, (name, column) in enumerate(columns.items(), start=1):
        table = table.add_column(position, name, column)
    return table


def write_chunk_shard(
    out: Path, index: int, doc_ids: list[str], spans: list[list[tuple[int, int]]], embeddings: np.ndarray
) -> Path:
    """Write shard ``index`` of a chunked run (see :func:`chunk_table`) atomically, then its record, which
    counts the shard's documents as ``rows`` (the unit of the plan) and its chunks as ``chunks``."""
    table = chunk_table(doc_ids, spans, embeddings)
    return _write_table(out, index, table, len(doc_ids), chunks=table.num_rows)


def recorded_chunks(out: Path, shards: int) -> int:
    """Chunks written by a chunked run, from the finish records of its ``shards`` shards."""
    return sum(
        int(json.loads(record_path(out, k).read_text(encoding="utf-8")).get("chunks", 0))
        for k in range(shards)
    )


def _write_table(out: Path, index: int, table, rows: int, chunks: int | None = None) -> Path:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = buffer.getvalue()
    path = shard_path(out, index)
    write_file_atomic(path, data)
    _write_record(out, index, rows, data, chunks)
    return path


def _write_record(out: Path, index: int, rows: int, data: bytes, chunks: int | None = None) -> None:
    record = {
        "shard": f"{DATA_DIR}/{shard_name(index)}",
        "rows": rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if chunks is not None:
        record["chunks"] = chunks
    write_json_atomic(record_path(out, index), record)


def read_shards(out: str | Path) -> tuple[list[str], np.ndarray]:
    """All ids and embeddings of a finished output folder, in input order (a chunked run: one row per
    chunk, each with its document's id; read ``out / "data"`` with pyarrow for the chunk columns).

    Only the shards the manifest plans are read (a stray or copied file in ``data/`` is ignored); the
    embeddings keep their stored dtype (float32, or int8/uint8 for compact precisions). A folder with
    a shard missing is an error that says to re-run the command.
    """

    from decoder2vec.corpus.manifest import read_manifest
    from decoder2vec.errors import InputError

    out = Path(out).expanduser()
    manifest = read_manifest(out)
    if manifest is None:
        raise InputError(f"{out} holds no embed-corpus output (no manifest.json)")
    old_layout = manifest_layout_is_old(manifest)
    paths = [out / shard_name(k) if old_layout else shard_path(out, k) for k in range(manifest["shards"])]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(
            f"{out} is not complete: {len(missing)} of {len(paths)} shards are missing "
            f"(first: {missing[0]}); re-run the embed-corpus command that made it to finish it"
        )
    ids: list[str] = []
    parts: list[np.ndarray] = []
    for path in paths:
        table = read_parquet(path)
        ids.extend(table.column("id").to_pylist())
        column = table.column("embedding").combine_chunks()
        parts.append(column.values.to_numpy().reshape(len(column), column.type.list_size))
    return ids, (np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32))


def manifest_layout_is_old(manifest: dict) -> bool:
    """Whether a manifest's folder has its shards beside it (before ``data/``) rather than in ``data/``."""
    from decoder2vec.corpus.manifest import OLD_FORMATS

    return manifest.get("format") in OLD_FORMATS
