"""Readers for the evaluation files: STS-B and SICK as distributed, and a generic per-task format.

Every reader fails with :class:`DataFormatError` naming the file and line, never with a bare KeyError or a
silently shorter data set: a skipped line would change a published score without anyone noticing.
The generic format is documented in ``docs/evaluation.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from decoder2vec.evaluation.errors import DataFormatError
from decoder2vec.evaluation.instructions import format_instruction
from decoder2vec.evaluation.tasks import (
    TASK_TYPES,
    ClassificationData,
    ClusteringData,
    EvalTask,
    PairClassificationData,
    RerankingData,
    RetrievalData,
    STSData,
)
from decoder2vec.io import iter_jsonl

__all__ = [
    "DataFormatError",
    "load_records",
    "load_sick",
    "load_stsb",
    "load_task_dir",
]

Record = tuple[int, dict[str, Any]]  # (1-based line number, fields)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise DataFormatError(path, "file is empty")
    return lines


def _score(
    path: Path, lineno: int, raw: Any, name: str, lo: float | None = None, hi: float | None = None
) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise DataFormatError(path, f"{name} {raw!r} is not a number", lineno) from None
    if not math.isfinite(value):
        raise DataFormatError(path, f"{name} is {raw!r}; scores must be finite numbers", lineno)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise DataFormatError(path, f"{name} {value} is outside [{lo}, {hi}]", lineno)
    return value


def _text(path: Path, lineno: int, raw: Any, name: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise DataFormatError(path, f"{name} is missing or empty", lineno)
    return raw


def load_stsb(path: str | Path) -> STSData:
    """STS Benchmark ``sts-*.csv``: tab-separated, no header; score in column 5, sentences in 6 and 7.

    Some lines carry extra columns (the source of a news pair) after sentence 2; they are ignored. The file is
    not CSV-quoted (sentences contain bare quotes), so it is split on tabs only.
    """
    path = Path(path)
    s1, s2, scores = [], [], []
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 7:
            raise DataFormatError(
                path, f"expected at least 7 tab-separated columns, found {len(cols)}", lineno
            )
        scores.append(_score(path, lineno, cols[4], "score", 0.0, 5.0))
        s1.append(_text(path, lineno, cols[5], "sentence 1"))
        s2.append(_text(path, lineno, cols[6], "sentence 2"))
    return STSData(s1, s2, scores)


_SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score")


def load_sick(path: str | Path) -> STSData:
    """SICK 2014 ``SICK_*.txt``: tab-separated with a header; relatedness_score (1–5) is the gold score."""
    path = Path(path)
    s1, s2, scores = [], [], []
    for lineno, row in _tsv_records(path, required=_SICK_COLUMNS):
        s1.append(_text(path, lineno, row["sentence_A"], "sentence_A"))
        s2.append(_text(path, lineno, row["sentence_B"], "sentence_B"))
        scores.append(_score(path, lineno, row["relatedness_score"], "relatedness_score", 1.0, 5.0))
    return STSData(s1, s2, scores)


def _tsv_records(path: Path, required: tuple[str, ...] = ()) -> Iterator[Record]:
    lines = _read_lines(path)
    header_no = next(i for i, line in enumerate(lines) if line.strip())
    header = [h.strip() for h in lines[header_no].split("\t")]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataFormatError(
            path, f"header lacks column(s) {', '.join(missing)}; it has {', '.join(header)}", header_no + 1
        )
    n_rows = 0
    for i in range(header_no + 1, len(lines)):
        line = lines[i]
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != len(header):
            raise DataFormatError(
                path,
                f"expected {len(header)} tab-separated columns as in the header, found {len(cols)}",
                i + 1,
            )
        n_rows += 1
        yield i + 1, dict(zip(header, cols, strict=True))
    if n_rows == 0:
        raise DataFormatError(path, "no data rows after the header")


def _jsonl_records(path: Path) -> Iterator[Record]:
    bad_json = lambda lineno, detail: DataFormatError(path, f"invalid JSON ({detail})", lineno)
    for lineno, obj in iter_jsonl(path, _read_lines(path), error=bad_json):
        if not isinstance(obj, dict):
            raise DataFormatError(path, "each line must be a JSON object", lineno)
        yield lineno, obj


def load_records(path: str | Path, required: tuple[str, ...] = ()) -> list[Record]:
    """Rows of a ``.jsonl`` file (one object a line) or a ``.tsv`` file (header line, no quoting)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = list(_jsonl_records(path))
        for lineno, row in rows:
            missing = [c for c in required if c not in row]
            if missing:
                raise DataFormatError(path, f"missing field(s) {', '.join(missing)}", lineno)
        return rows
    if path.suffix == ".tsv":
        return list(_tsv_records(path, required))
    raise DataFormatError(path, "unsupported file type; use .jsonl or .tsv")


def _find(folder: Path, stem: str) -> Path:
    for suffix in (".jsonl", ".tsv"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise DataFormatError(folder / f"{stem}.jsonl", f"task folder has no {stem}.jsonl or {stem}.tsv")


def _label_int(path: Path, lineno: int, raw: Any) -> int:
    if str(raw).strip() not in ("0", "1"):
        raise DataFormatError(path, f"label {raw!r} must be 0 or 1", lineno)
    return int(str(raw).strip())


def _load_pairs(path: Path, score_field: str) -> tuple[list[str], list[str], list[Any]]:
    s1, s2, y = [], [], []
    for lineno, row in load_records(path, ("sentence1", "sentence2", score_field)):
        s1.append(_text(path, lineno, row["sentence1"], "sentence1"))
        s2.append(_text(path, lineno, row["sentence2"], "sentence2"))
        if score_field == "score":
            y.append(_score(path, lineno, row["score"], "score"))
        else:
            y.append(_label_int(path, lineno, row["label"]))
    return s1, s2, y


def _load_labelled(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for lineno, row in load_records(path, ("text", "label")):
        texts.append(_text(path, lineno, row["text"], "text"))
        label = row["label"]
        if label is None or str(label).strip() == "":
            raise DataFormatError(path, "label is missing or empty", lineno)
        labels.append(str(label))
    return texts, labels


def _load_id_texts(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, row in load_records(path, ("id", "text")):
        key = str(row["id"])
        if key in out:
            raise DataFormatError(path, f"duplicate id {key!r}", lineno)
        text = _text(path, lineno, row["text"], "text")
        title = row.get("title")
        # BEIR convention: the title is part of the passage
        out[key] = f"{title} {text}" if isinstance(title, str) and title.strip() else text
    return out


def _load_retrieval(folder: Path) -> RetrievalData:
    queries = _load_id_texts(_find(folder, "queries"))
    corpus = _load_id_texts(_find(folder, "corpus"))
    qrels_path = _find(folder, "qrels")
    qrels: dict[str, dict[str, int]] = {}
    for lineno, row in load_records(qrels_path, ("query_id", "doc_id", "score")):
        qid, did = str(row["query_id"]), str(row["doc_id"])
        if qid not in queries:
            raise DataFormatError(qrels_path, f"query_id {qid!r} is not in {folder / 'queries'}.*", lineno)
        if did not in corpus:
            raise DataFormatError(qrels_path, f"doc_id {did!r} is not in {folder / 'corpus'}.*", lineno)
        score = _score(qrels_path, lineno, row["score"], "score")
        if score != int(score):
            raise DataFormatError(qrels_path, f"relevance {score} must be an integer grade", lineno)
        qrels.setdefault(qid, {})[did] = int(score)
    positives = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    if not positives:
        raise DataFormatError(qrels_path, "no query has a relevant document (score > 0)")
    # queries without any positive cannot be scored; keep only the judged ones, as MTEB does
    return RetrievalData({q: queries[q] for q in positives}, corpus, {q: qrels[q] for q in positives})


def _load_reranking(path: Path) -> RerankingData:
    if path.suffix != ".jsonl":
        raise DataFormatError(path, "reranking data must be JSONL (its candidates are lists)")
    queries, candidates, labels = [], [], []
    for lineno, row in load_records(path, ("query", "positive", "negative")):
        pos, neg = row["positive"], row["negative"]
        if not isinstance(pos, list) or not isinstance(neg, list):
            raise DataFormatError(path, "positive and negative must be lists of texts", lineno)
        if not pos:
            raise DataFormatError(path, "query has no positive candidate", lineno)
        cands = [_text(path, lineno, t, "candidate") for t in pos + neg]
        queries.append(_text(path, lineno, row["query"], "query"))
        candidates.append(cands)
        labels.append([1] * len(pos) + [0] * len(neg))
    return RerankingData(queries, candidates, labels)


def load_task_dir(folder: str | Path, name: str | None = None) -> EvalTask:
    """A custom task: a folder with ``task.json`` (``{"type": ..., "instruction": ...}``) and its data files."""
    folder = Path(folder)
    spec_path = folder / "task.json"
    if not spec_path.is_file():
        raise DataFormatError(spec_path, "task folder has no task.json")
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(spec_path, f"invalid JSON ({exc.msg})", exc.lineno) from None
    if not isinstance(spec, dict) or spec.get("type") not in TASK_TYPES:
        raise DataFormatError(spec_path, f"'type' must be one of {', '.join(TASK_TYPES)}")
    kind = spec["type"]
    instruction = spec.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise DataFormatError(spec_path, "'instruction' must be a string")
    name = name or folder.name
    data: Any
    if kind == "sts":
        path = _find(folder, "test")
        s1, s2, scores = _load_pairs(path, "score")
        data = STSData(s1, s2, scores)
    elif kind == "pair_classification":
        path = _find(folder, "test")
        s1, s2, labels = _load_pairs(path, "label")
        if len(set(labels)) < 2:
            raise DataFormatError(path, "pair classification needs both 0 and 1 labels")
        data = PairClassificationData(s1, s2, labels)
    elif kind == "classification":
        train_texts, train_labels = _load_labelled(_find(folder, "train"))
        test_path = _find(folder, "test")
        test_texts, test_labels = _load_labelled(test_path)
        unseen = sorted(set(test_labels) - set(train_labels))
        if unseen:
            raise DataFormatError(test_path, f"label(s) {', '.join(unseen)} never occur in the training file")
        data = ClassificationData(train_texts, train_labels, test_texts, test_labels)
    elif kind == "clustering":
        path = _find(folder, "test")
        texts, labels = _load_labelled(path)
        if len(set(labels)) < 2:
            raise DataFormatError(path, "clustering needs at least two distinct labels")
        data = ClusteringData(texts, labels)
    elif kind == "retrieval":
        data = _load_retrieval(folder)
    else:
        data = _load_reranking(_find(folder, "test"))
    return EvalTask(
        name=name, type=kind, data=data, instruction=format_instruction(instruction), source=[str(folder)]
    )
