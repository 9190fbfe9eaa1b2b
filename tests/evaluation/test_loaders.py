"""Loaders on small hand-made files (good and malformed), and on the real shared data when it is present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from decoder2vec.evaluation import DataFormatError, load_sick, load_stsb, load_task_dir
from decoder2vec.evaluation.tasks import ClassificationData, RetrievalData

from .helpers import SHARED_DATA

STSB_LINES = [
    "main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.",
    # extra columns after sentence 2 (as in the real news lines) are ignored
    'main-news\theadlines\t2016\t0281\t4\tUS court "limits" power\tHigh court checks power\tEurope Media Monitor\tEMM',
    "main-forums\tdeft-forum\t2014\t0003\t0.8\tThey said so.\tNobody did.",
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_stsb_reads_scores_sentences_and_ignores_extra_columns(tmp_path: Path) -> None:
    data = load_stsb(write(tmp_path / "sts-test.csv", STSB_LINES))
    assert data.scores == [5.0, 4.0, 0.8]
    # bare quotes stay as they are (the file is not CSV-quoted)
    assert data.sentences1[1] == 'US court "limits" power'
    assert data.sentences2 == ["An air plane is taking off.", "High court checks power", "Nobody did."]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("genre\tfile\t2012\t0001\t5.0\tonly one sentence", "at least 7"),
        ("genre\tfile\t2012\t0001\tNaN\tA\tB", "finite"),
        ("genre\tfile\t2012\t0001\tfive\tA\tB", "not a number"),
        ("genre\tfile\t2012\t0001\t7.5\tA\tB", "outside"),
        ("genre\tfile\t2012\t0001\t3.0\t \tB", "sentence 1"),
    ],
)
def test_stsb_malformed_line_names_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    path = write(tmp_path / "sts.csv", [STSB_LINES[0], bad_line])
    with pytest.raises(DataFormatError, match=message) as info:
        load_stsb(path)
    assert f"{path}:2:" in str(info.value)
    assert info.value.line == 2


def test_empty_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="empty"):
        load_stsb(empty)
    with pytest.raises(DataFormatError, match="not found"):
        load_sick(tmp_path / "nope.txt")


SICK_HEADER = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"


def test_sick_reads_relatedness(tmp_path: Path) -> None:
    path = write(
        tmp_path / "SICK.txt",
        [
            SICK_HEADER,
            "1\tA kid plays\tA child plays\t4.5\tENTAILMENT",
            "2\tA dog runs\tA cat sleeps\t1.2\tNEUTRAL",
        ],
    )
    data = load_sick(path)
    assert data.scores == [4.5, 1.2]
    assert data.sentences1 == ["A kid plays", "A dog runs"]


@pytest.mark.parametrize(
    ("lines", "message", "line"),
    [
        (
            ["pair_ID\tsentence_A\tsentence_B\tentailment_judgment", "1\ta\tb\tNEUTRAL"],
            "relatedness_score",
            1,
        ),
        ([SICK_HEADER, "1\ta\tb\t4.5"], "expected 5", 2),
        ([SICK_HEADER, "1\ta\tb\tnan\tNEUTRAL"], "finite", 2),
        ([SICK_HEADER, "1\ta\tb\t0.5\tNEUTRAL"], "outside", 2),
        ([SICK_HEADER], "no data rows", None),
    ],
)
def test_sick_malformed(tmp_path: Path, lines: list[str], message: str, line: int | None) -> None:
    path = write(tmp_path / "SICK.txt", lines)
    with pytest.raises(DataFormatError, match=message) as info:
        load_sick(path)
    assert info.value.line == line


def make_task(
    root: Path, name: str, kind: str, files: dict[str, list[str]], instruction: str | None = None
) -> Path:
    folder = root / name
    folder.mkdir()
    spec = {"type": kind} | ({"instruction": instruction} if instruction else {})
    (folder / "task.json").write_text(json.dumps(spec), encoding="utf-8")
    for fname, lines in files.items():
        write(folder / fname, lines)
    return folder


def jl(*objs: dict) -> list[str]:
    return [json.dumps(o) for o in objs]


def test_generic_sts_jsonl_and_tsv(tmp_path: Path) -> None:
    a = make_task(
        tmp_path,
        "a",
        "sts",
        {"test.jsonl": jl({"sentence1": "x", "sentence2": "y", "score": 2})},
        "Find similar",
    )
    task = load_task_dir(a)
    assert (task.name, task.type, task.instruction) == ("a", "sts", "Find similar: ")
    assert task.data.scores == [2.0]
    b = make_task(tmp_path, "b", "sts", {"test.tsv": ["sentence1\tsentence2\tscore", "x\ty\t0.5", "p\tq\t1"]})
    assert load_task_dir(b).data.sentences2 == ["y", "q"]


def test_generic_classification_and_retrieval(tmp_path: Path) -> None:
    c = make_task(
        tmp_path,
        "cls",
        "classification",
        {
            "train.jsonl": jl({"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}),
            "test.tsv": ["text\tlabel", "fine\tpos"],
        },
    )
    data = load_task_dir(c).data
    assert isinstance(data, ClassificationData) and data.test_labels == ["pos"]
    r = make_task(
        tmp_path,
        "ret",
        "retrieval",
        {
            "queries.jsonl": jl({"id": "q1", "text": "who"}, {"id": "q2", "text": "unjudged"}),
            "corpus.jsonl": jl({"id": "d1", "title": "T", "text": "body"}, {"id": "d2", "text": "other"}),
            "qrels.tsv": ["query_id\tdoc_id\tscore", "q1\td1\t2", "q1\td2\t0"],
        },
    )
    data = load_task_dir(r).data
    assert isinstance(data, RetrievalData)
    assert data.qrels == {"q1": {"d1": 2, "d2": 0}}
    assert list(data.queries) == ["q1"]  # q2 has no judgement and cannot be scored
    assert data.corpus["d1"] == "T body"


@pytest.mark.parametrize(
    ("kind", "files", "message"),
    [
        (
            "retrieval",
            {
                "queries.jsonl": jl({"id": "q", "text": "a"}),
                "corpus.jsonl": jl({"id": "d", "text": "b"}),
                "qrels.tsv": ["query_id\tdoc_id\tscore", "q\td\t0"],
            },
            "no query has a relevant",
        ),
        (
            "retrieval",
            {
                "queries.jsonl": jl({"id": "q", "text": "a"}),
                "corpus.jsonl": jl({"id": "d", "text": "b"}),
                "qrels.tsv": ["query_id\tdoc_id\tscore", "q\tzz\t1"],
            },
            "doc_id 'zz'",
        ),
        ("reranking", {"test.jsonl": jl({"query": "q", "positive": [], "negative": ["n"]})}, "no positive"),
        (
            "sts",
            {"test.jsonl": ['{"sentence1": "a", "sentence2": "b", "score": 1}', "{not json"]},
            "invalid JSON",
        ),
        ("sts", {"test.jsonl": jl({"sentence1": "a", "score": 1})}, "missing field"),
        ("sts", {"test.tsv": ["sentence1\tsentence2\tscore", "a\tb\tNaN"]}, "finite"),
        (
            "pair_classification",
            {"test.jsonl": jl({"sentence1": "a", "sentence2": "b", "label": 3})},
            "0 or 1",
        ),
        (
            "classification",
            {"train.jsonl": jl({"text": "a", "label": "x"}), "test.jsonl": jl({"text": "b", "label": "y"})},
            "never occur",
        ),
        ("sts", {}, "no test.jsonl"),
    ],
)
def test_generic_malformed(tmp_path: Path, kind: str, files: dict, message: str) -> None:
    folder = make_task(tmp_path, "t", kind, files)
    with pytest.raises(DataFormatError, match=message):
        load_task_dir(folder)


def test_task_json_must_name_a_known_type(tmp_path: Path) -> None:
    folder = make_task(tmp_path, "t", "sts", {})
    (folder / "task.json").write_text('{"type": "translation"}')
    with pytest.raises(DataFormatError, match="'type' must be one of"):
        load_task_dir(folder)


@pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason="real data check: ../shared/data is not beside this checkout"
)
def test_real_shared_data_counts() -> None:
    # pair counts from shared/README.md
    assert len(load_stsb(SHARED_DATA / "stsbenchmark" / "sts-test.csv").scores) == 1379
    assert len(load_stsb(SHARED_DATA / "stsbenchmark" / "sts-train.csv").scores) == 5749
    assert len(load_sick(SHARED_DATA / "sick2014" / "SICK_test_annotated.txt").scores) == 4927
