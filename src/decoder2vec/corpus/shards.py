"""Shard planning and atomic Parquet shard writes.

Shard ``k`` holds records ``[k * size, (k + 1) * size)`` of the corpus in input order, so a plan is
a pure function of the inputs and the shard size. A shard is finished iff its file exists: it is
written to a temporary sibling and renamed into place, so it is never seen half written.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from decoder2vec.io import write_file_atomic

SHARD_PREFIX = "part-"
SHARD_SUFFIX = ".parquet"


def shard_name(index: int) -> str:
    return f"{SHARD_PREFIX}{index:05d}{SHARD_SUFFIX}"


def plan_shards(rows: int, shard_size: int) -> list[range]:
    """The row ranges of the shards of a corpus of ``rows`` records."""
    return [range(start, min(start + shard_size, rows)) for start in range(0, rows, shard_size)]


def pending_shards(out: Path, count: int) -> list[int]:
    """Indices of the planned shards whose file does not exist yet."""
    return [k for k in range(count) if not (out / shard_name(k)).is_file()]


def remove_partial_files(out: Path) -> None:
    """Delete temporary shard files left by a process killed while writing (``write_file_atomic`` names)."""
    for path in out.glob(f".{SHARD_PREFIX}*{SHARD_SUFFIX}.*"):
        path.unlink(missing_ok=True)


def shard_table(ids: list[str], embeddings: np.ndarray):
    """An Arrow table with ``id`` (string) and ``embedding`` (fixed-size list of float32)."""
    import pyarrow as pa

    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(ids):
        raise ValueError(f"expected {len(ids)} embeddings, got an array of shape {embeddings.shape}")
    dim = embeddings.shape[1]
    values = pa.array(embeddings.reshape(-1), type=pa.float32())
    return pa.table(
        {"id": pa.array(ids, type=pa.string()), "embedding": pa.FixedSizeListArray.from_arrays(values, dim)}
    )


def write_shard(out: Path, index: int, ids: list[str], embeddings: np.ndarray) -> Path:
    """Write shard ``index`` atomically and return its path."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(shard_table(ids, embeddings), buffer)
    path = out / shard_name(index)
    write_file_atomic(path, buffer.getvalue())
    return path


def read_shards(out: str | Path) -> tuple[list[str], np.ndarray]:
    """All ids and embeddings of a finished output folder, in shard order (for tests and users)."""
    import pyarrow.parquet as pq

    ids: list[str] = []
    parts: list[np.ndarray] = []
    for path in sorted(Path(out).glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}")):
        table = pq.read_table(path)
        ids.extend(table.column("id").to_pylist())
        column = table.column("embedding").combine_chunks()
        parts.append(column.values.to_numpy().reshape(len(column), column.type.list_size))
    return ids, (np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32))
