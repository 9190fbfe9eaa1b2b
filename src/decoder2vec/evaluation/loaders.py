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
    "beir_split",
    "is_beir_folder",
    "load_beir",
    "load_records",
    "load_retrieval",
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


def _load_id_texts(path: Path, id_field: str = "id") -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, row in load_records(path, (id_field, "text")):
        key = row[id_field]
        if isinstance(key, bool) or not isinstance(key, str | int) or not str(key).strip():
            raise DataFormatError(path, f"{id_field} must be a non-empty string, got {key!r}", lineno)
        key = str(key)
        if key in out:
            raise DataFormatError(path, f"duplicate {id_field} {key!r}", lineno)
        title, text = row.get("title"), row["text"]
        title = title.strip() if isinstance(title, str) else ""
        if not isinstance(text, str) or not (text.strip() or title):
            # (a BEIR passage may have an empty text when its title says it all)
            raise DataFormatError(path, "text is missing or empty", lineno)
        # BEIR convention: the title is part of the passage
        out[key] = f"{title} {text}".strip() if title else text
    return out


def _check_qrels(
    qrels_path: Path,
    rows: list[Record],
    columns: tuple[str, str, str],
    queries: dict[str, str],
    corpus: dict[str, str],
    sources: tuple[Path, Path],
) -> RetrievalData:
    """Judgements ``rows`` (query id, doc id, integer grade) against the queries and corpus read from
    ``sources``; only queries with a relevant document (grade > 0) are kept, as MTEB and BEIR score."""
    q_col, d_col, s_col = columns
    qrels: dict[str, dict[str, int]] = {}
    for lineno, row in rows:
        qid, did = str(row[q_col]).strip(), str(row[d_col]).strip()
        if qid not in queries:
            raise DataFormatError(qrels_path, f"{q_col} {qid!r} is not in {sources[0]}", lineno)
        if did not in corpus:
            raise DataFormatError(qrels_path, f"{d_col} {did!r} is not in {sources[1]}", lineno)
        score = _score(qrels_path, lineno, row[s_col], s_col)
        if score != int(score):
            raise DataFormatError(qrels_path, f"relevance {row[s_col]!r} must be an integer grade", lineno)
        if did in qrels.get(qid, {}):
            raise DataFormatError(qrels_path, f"duplicate judgement of {did!r} for {qid!r}", lineno)
        qrels.setdefault(qid, {})[did] = int(score)
    positives = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    if not positives:
        raise DataFormatError(qrels_path, "no query has a relevant document (score > 0)")
    # queries without any positive cannot be scored; keep only the judged ones, as MTEB does
    return RetrievalData({q: queries[q] for q in positives}, corpus, {q: qrels[q] for q in positives})


def _load_retrieval(folder: Path) -> RetrievalData:
    queries_path, corpus_path = _find(folder, "queries"), _find(folder, "corpus")
    queries, corpus = _load_id_texts(queries_path), _load_id_texts(corpus_path)
    qrels_path = _find(folder, "qrels")
    rows = load_records(qrels_path, ("query_id", "doc_id", "score"))
    return _check_qrels(
        qrels_path, rows, ("query_id", "doc_id", "score"), queries, corpus, (queries_path, corpus_path)
    )


# ------------------------------------------------------------------ BEIR folders
BEIR_QRELS_COLUMNS = ("query-id", "corpus-id", "score")
BEIR_DEFAULT_SPLITS = ("dev", "test")  # tried in this order when no split is named


def is_beir_folder(folder: str | Path) -> bool:
    """A BEIR data set: ``corpus.jsonl``, ``queries.jsonl`` and a ``qrels/`` folder of ``<split>.tsv``."""
    folder = Path(folder)
    return (folder / "corpus.jsonl").is_file() and (folder / "qrels").is_dir()


def beir_split(folder: str | Path, split: str | None = None) -> str:
    """The qrels split to score: ``split`` if given, else dev, else test, else the folder's only one."""
    qrels_dir = Path(folder) / "qrels"
    found = sorted(p.stem for p in qrels_dir.glob("*.tsv") if p.is_file())
    if not found:
        raise DataFormatError(qrels_dir, "holds no <split>.tsv qrels file")
    if split is not None:
        if split not in found:
            raise DataFormatError(qrels_dir / f"{split}.tsv", f"no such split; found {', '.join(found)}")
        return split
    for name in BEIR_DEFAULT_SPLITS:
        if name in found:
            return name
    if len(found) == 1:
        return found[0]
    raise DataFormatError(qrels_dir, f"several splits ({', '.join(found)}) and no dev or test; name one")


def load_beir(folder: str | Path, split: str | None = None) -> RetrievalData:
    """A BEIR folder: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
    ``text``) and ``qrels/<split>.tsv`` (header ``query-id  corpus-id  score``, integer grades).

    The passage is ``title + " " + text`` (BEIR's and MTEB's convention). Queries judged in the split with
    at least one relevant document are kept; the corpus is kept whole (the other splits' documents are
    distractors too, as in BEIR).
    """
    folder = Path(folder)
    if not is_beir_folder(folder):
        raise DataFormatError(folder, "not a BEIR folder: expected corpus.jsonl, queries.jsonl and qrels/")
    queries_path, corpus_path = folder / "queries.jsonl", folder / "corpus.jsonl"
    queries, corpus = _load_id_texts(queries_path, "_id"), _load_id_texts(corpus_path, "_id")
    qrels_path = folder / "qrels" / f"{beir_split(folder, split)}.tsv"
    rows = list(_tsv_records(qrels_path, BEIR_QRELS_COLUMNS))
    return _check_qrels(qrels_path, rows, BEIR_QRELS_COLUMNS, queries, corpus, (queries_path, corpus_path))


def load_retrieval(folder: str | Path, split: str | None = None) -> tuple[RetrievalData, str]:
    """A retrieval data set and its split: a BEIR folder, or a custom task folder of type retrieval
    (``task.json`` + queries/corpus/qrels, whose one split is ``test``)."""
    folder = Path(folder)
    if is_beir_folder(folder):
        split = beir_split(folder, split)
        return load_beir(folder, split), split
    if (folder / "task.json").is_file():
        task = load_task_dir(folder)
        if task.type != "retrieval":
            raise DataFormatError(folder / "task.json", f"task type is {task.type!r}, not retrieval")
        if split not in (None, "test"):
            raise DataFormatError(folder, f"a custom task folder has one split (test), not {split!r}")
        return task.data, "test"
    if not folder.is_dir():
        raise DataFormatError(folder, "retrieval data folder not found")
    raise DataFormatError(
        folder, "not a retrieval folder: expected BEIR files (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)"
    )


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
