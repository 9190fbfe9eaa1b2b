"""Read and validate a corpus: JSONL, Parquet or plain-text files, globs allowed.

Everything is read and checked in one pass before any model loads, so a bad record fails fast with
its file and line. The result keeps input order, which is what defines the shards.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from decoder2vec.errors import InputError
from decoder2vec.io import check_unicode, decode_lines, iter_jsonl

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")  # .json: JSON Lines saved under the common suffix
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class InputFile:
    """One input file as the manifest records it: the content hash catches any edit."""

    path: str
    size: int
    sha256: str
    records: int

    def as_dict(self) -> dict:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "records": self.records}


@dataclass
class Corpus:
    """All records of all inputs, in input order, and the fingerprints of the files they came from."""

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    files: list[InputFile] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # "file:line" of each record, for error messages
    titles: list[str] = field(default_factory=list)  # with ``title_field`` only ("" where a record has none)

    def __len__(self) -> int:
        return len(self.texts)


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Expand globs (``**`` included) into a sorted list of distinct files; a pattern matching nothing is an error."""
    if not patterns:
        raise InputError("no input given: pass one or more JSONL, Parquet or text files (globs allowed)")
    found: set[str] = set()
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = [m for m in glob.glob(pattern, recursive=True) if Path(m).is_file()]
            if not matches:
                raise InputError(f"no input file matches {pattern!r}")
            found.update(matches)
        elif Path(pattern).is_file():
            found.add(pattern)
        elif Path(pattern).is_dir():
            raise InputError(f"{pattern} is a folder; pass files or a glob such as '{pattern}/*.jsonl'")
        else:
            raise InputError(f"input file not found: {pattern}")
    # Sorted, so the same command on the same files always plans the same shards.
    return [Path(p) for p in sorted(found)]


def read_corpus(
    patterns: list[str], text_field: str = "text", id_field: str = "id", title_field: str | None = None
) -> Corpus:
    """Read every input, checking texts (present, non-empty, valid Unicode) and ids (unique).

    Ids come from ``id_field`` (converted to a string); plain-text files, and records without that
    field, get ``file:line``. Blank lines of text and JSONL files are skipped. With ``title_field``,
    ``corpus.titles`` holds each record's title (optional: "" where absent; a string where present).
    """
    corpus = Corpus()
    first_seen: dict[str, str] = {}
    for path in expand_inputs(patterns):
        data = path.read_bytes()
        before = len(corpus)
        for where, record_id, text, title in _records(path, data, text_field, id_field, title_field):
            record_id = record_id if record_id is not None else where
            if record_id in first_seen:
                raise InputError(f"{where}: duplicate id {record_id!r} (first at {first_seen[record_id]})")
            first_seen[record_id] = where
            corpus.ids.append(record_id)
            corpus.texts.append(text)
            corpus.where.append(where)
            if title_field is not None:
                corpus.titles.append(title)
        if len(corpus) == before:
            raise InputError(f"{path}: holds no texts")
        digest = hashlib.sha256(data).hexdigest()
        corpus.files.append(InputFile(str(path), len(data), digest, len(corpus) - before))
    return corpus


def _records(path: Path, data: bytes, text_field: str, id_field: str, title_field: str | None = None):
    """``(where, id or None, text, title)`` for each record of one file, by its format (title "" if none)."""
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        yield from _parquet_records(path, data, text_field, id_field, title_field)
    elif suffix in JSONL_SUFFIXES:
        for number, record in iter_jsonl(path, decode_lines(data, str(path))):
            where = f"{path}:{number}"
            if not isinstance(record, dict):
                raise InputError(f"{where}: a JSON object is needed, got {type(record).__name__}")
            if text_field not in record:
                raise InputError(f"{where}: no {text_field!r} field")
            yield (
                where,
                _id_of(record.get(id_field), id_field in record, where),
                _text_of(record[text_field], where),
                _title_of(record.get(title_field) if title_field else None, where),
            )
    else:
        for number, line in enumerate(decode_lines(data, str(path)), start=1):
            if line.strip():  # blank lines separate nothing, as in `decoder2vec encode`
                where = f"{path}:{number}"
                yield where, None, check_unicode(line, where), ""


def _parquet_records(path: Path, data: bytes, text_field: str, id_field: str, title_field: str | None):
    import pyarrow as pa

    try:
        table = read_parquet(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
    if text_field not in table.column_names:
        raise InputError(f"{path}: no {text_field!r} column (columns: {', '.join(table.column_names)})")
    texts = table.column(text_field).to_pylist()
    has_ids = id_field in table.column_names
    ids = table.column(id_field).to_pylist() if has_ids else [None] * len(texts)
    has_titles = title_field is not None and title_field in table.column_names
    titles = table.column(title_field).to_pylist() if has_titles else [None] * len(texts)
    # Parquet has no lines: "line" N is the N-th row, counted from 1 like lines.
    for number, (record_id, text, title) in enumerate(zip(ids, texts, titles), start=1):
        where = f"{path}:{number}"
        yield where, _id_of(record_id, has_ids, where), _text_of(text, where), _title_of(title, where)


def read_parquet(source):
    """A whole Parquet file (a path or an in-memory ``pa.BufferReader``) as a table, read on this thread.

    Not ``pq.read_table``: it starts Arrow's pool threads (the dataset layer's I/O thread even with
    ``use_threads=False``), and a process that exits soon after, as the CLI does on a bad record, aborts
    in about half of the runs with torch loaded ("terminate called without an active exception", exit
    134) while a pool thread is still alive. ``ParquetFile.read(use_threads=False)`` starts none."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(source) as reader:
        return reader.read(use_threads=False)


def _text_of(value, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: the text is {type(value).__name__}, not a string")
    if not value.strip():
        raise InputError(f"{where}: the text is empty; there is nothing to embed")
    return check_unicode(value, where)


def _title_of(value, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{where}: the title is {type(value).__name__}, not a string")
    return check_unicode(value.strip(), where)


def _id_of(value, present: bool, where: str) -> str | None:
    if not present:
        return None
    if value is None or isinstance(value, dict | list) or (isinstance(value, str) and not value):
        raise InputError(f"{where}: the id must be a non-empty string or a number, got {value!r}")
    return str(value)
