"""Retrieval evaluation: BEIR folders, trec_eval-exact metrics, BM25 (bm25s), and `decoder2vec eval retrieval`.

Every score is checked against pytrec_eval (trec_eval's own C code) on the same run, and BM25's scores
against the Lucene formula written out in numpy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval
from typer.testing import CliRunner

from decoder2vec.evaluation import metrics
from decoder2vec.evaluation.errors import DataFormatError
from decoder2vec.evaluation.loaders import load_beir, load_retrieval
from decoder2vec.evaluation.retrieval import (
    BM25_SETTINGS,
    bm25_run,
    bm25_tokenize,
    evaluate_bm25,
    evaluate_retrieval,
    subsample,
)
from decoder2vec.evaluation.tasks import RetrievalData


def trec_reference(run: dict, qrels: dict) -> dict[str, float]:
    """The four scores (x100) from pytrec_eval; MRR@10 is its recip_rank on the run cut at 10."""
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100"}).evaluate(run)
    cut = {
        q: dict(sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:10])
        for q, docs in run.items()
    }
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    qids = list(qrels)
    return {
        "ndcg_at_10": 100 * np.mean([full[q]["ndcg_cut_10"] for q in qids]),
        "recall_at_10": 100 * np.mean([full[q]["recall_10"] for q in qids]),
        "recall_at_100": 100 * np.mean([full[q]["recall_100"] for q in qids]),
        "mrr_at_10": 100 * np.mean([rr[q]["recip_rank"] for q in qids]),
    }


def assert_same_scores(got: dict, ref: dict) -> None:
    for key in metrics.RETRIEVAL_METRICS:
        assert got[key] == pytest.approx(ref[key], abs=1e-6 * 100), key


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_run_scores_equal_pytrec_eval_on_random_runs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_docs = 300
    dids = [f"d{j:03d}" for j in range(n_docs)]
    run, qrels = {}, {}
    for i in range(25):
        qid = f"q{i}"
        size = int(rng.integers(5, 160))  # shorter and longer than 100, so both cut-offs matter
        picked = rng.choice(n_docs, size=size, replace=False)
        # coarse scores make ties, which trec_eval breaks by doc id (descending)
        run[qid] = {dids[j]: float(rng.integers(0, 20)) / 4 for j in picked}
        judged = rng.choice(n_docs, size=int(rng.integers(1, 15)), replace=False)
        qrels[qid] = {dids[j]: int(rng.integers(0, 4)) for j in judged}
        qrels[qid][dids[judged[0]]] = int(rng.integers(1, 4))  # at least one relevant document
    assert_same_scores(metrics.run_scores(run, qrels), trec_reference(run, qrels))


# ------------------------------------------------------------------ BEIR folders
CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats are small animals that purr and chase mice."},
    {"_id": "d2", "title": "", "text": "Dogs bark at the mailman every morning."},
    {"_id": "d3", "title": "Paris", "text": "Paris is the capital city of France."},
    {"_id": "d4", "text": "The stock market fell sharply on Monday."},
    {"_id": "d5", "title": "Rain", "text": "Rain falls from clouds when the air is saturated."},
    {"_id": "d6", "text": "Python is a programming language used for data science."},
]
QUERIES = [
    {"_id": "q1", "text": "which animals purr"},
    {"_id": "q2", "text": "capital of France"},
    {"_id": "q3", "text": "programming language for data"},
    {"_id": "q4", "text": "why does rain fall"},
]
DEV = [("q1", "d1", 2), ("q2", "d3", 1), ("q2", "d4", 0), ("q3", "d6", 1)]
TEST = [("q4", "d5", 1), ("q1", "d2", 1)]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def qrels_tsv(rows) -> str:
    return "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows)


def make_beir(root: Path, splits: dict | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text(jsonl(CORPUS))
    (root / "queries.jsonl").write_text(jsonl(QUERIES))
    (root / "qrels").mkdir()
    for name, rows in (splits if splits is not None else {"dev": DEV, "test": TEST}).items():
        (root / "qrels" / f"{name}.tsv").write_text(qrels_tsv(rows))
    return root


def test_beir_folder_reads_title_text_and_picks_dev_then_test(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "beir")
    data, split = load_retrieval(folder)
    assert split == "dev"
    assert data.corpus["d1"] == "Cats Cats are small animals that purr and chase mice."
    assert data.corpus["d2"] == "Dogs bark at the mailman every morning."  # empty title: no leading space
    assert data.qrels == {"q1": {"d1": 2}, "q2": {"d3": 1, "d4": 0}, "q3": {"d6": 1}}
    assert list(data.queries) == ["q1", "q2", "q3"]  # q4 is judged only in test
    assert len(data.corpus) == 6  # the whole corpus stays: other splits' passages are distractors
    assert set(load_beir(folder, "test").queries) == {"q1", "q4"}
    only = make_beir(tmp_path / "only", {"train": TEST})
    assert load_retrieval(only)[1] == "train"
    assert load_retrieval(make_beir(tmp_path / "t", {"test": TEST, "train": DEV}))[1] == "test"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda f: (f / "corpus.jsonl").write_text(jsonl(CORPUS[:2]) + "{oops\n"),
            r"corpus.jsonl:3: invalid JSON",
        ),
        (
            lambda f: (f / "corpus.jsonl").write_text(jsonl([*CORPUS, {"title": "x", "text": "y"}])),
            r"corpus.jsonl:7: missing field\(s\) _id",
        ),
        (
            lambda f: (f / "queries.jsonl").write_text(jsonl([*QUERIES, QUERIES[1]])),
            r"queries.jsonl:5: duplicate _id 'q2'",
        ),
        (
            lambda f: (f / "queries.jsonl").write_text(jsonl([*QUERIES, {"_id": "q9", "text": " "}])),
            r"queries.jsonl:5: text is missing",
        ),
        (
            lambda f: (f / "qrels" / "dev.tsv").write_text(qrels_tsv([*DEV, ("q7", "d1", 1)])),
            r"dev.tsv:6: query-id 'q7' is not in .*queries.jsonl",
        ),
        (
            lambda f: (f / "qrels" / "dev.tsv").write_text(qrels_tsv([*DEV, ("q1", "zz", 1)])),
            r"dev.tsv:6: corpus-id 'zz' is not in .*corpus.jsonl",
        ),
        (
            lambda f: (f / "qrels" / "dev.tsv").write_text(qrels_tsv([("q1", "d1", "1.5")])),
            r"dev.tsv:2: relevance '1.5' must be an integer",
        ),
        (
            lambda f: (f / "qrels" / "dev.tsv").write_text(qrels_tsv([("q1", "d1", "high")])),
            r"dev.tsv:2: score 'high' is not a number",
        ),
        (
            lambda f: (f / "qrels" / "dev.tsv").write_text(qrels_tsv([("q1", "d1", 0), ("q2", "d3", 0)])),
            r"dev.tsv: no query has a relevant document",
        ),
        (
            lambda f: (f / "qrels" / "dev.tsv").write_text(qrels_tsv([("q1", "d1", 1), ("q1", "d1", 2)])),
            r"dev.tsv:3: duplicate judgement",
        ),
        (
            lambda f: (f / "qrels" / "dev.tsv").write_text("q1\td1\t1\n"),
            r"dev.tsv:1: header lacks column\(s\) query-id",
        ),
    ],
)
def test_beir_bad_input_names_file_and_line(tmp_path: Path, edit, message: str) -> None:
    folder = make_beir(tmp_path / "beir")
    edit(folder)
    with pytest.raises(DataFormatError, match=message):
        load_retrieval(folder)


def test_beir_split_errors(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "beir")
    with pytest.raises(DataFormatError, match=r"qrels/train.tsv: no such split; found dev, test"):
        load_retrieval(folder, "train")
    several = make_beir(tmp_path / "several", {"a": DEV, "b": TEST})
    with pytest.raises(DataFormatError, match="several splits"):
        load_retrieval(several)
    with pytest.raises(DataFormatError, match="not a retrieval folder"):
        load_retrieval(tmp_path)


def test_subsample_keeps_judged_documents_and_is_fixed() -> None:
    corpus = {f"d{i}": f"text {i}" for i in range(50)}
    queries = {f"q{i}": f"query {i}" for i in range(20)}
    qrels = {f"q{i}": {f"d{2 * i}": 1, f"d{2 * i + 1}": 0} for i in range(20)}
    data = RetrievalData(queries, corpus, qrels)
    small = subsample(data, max_queries=5, max_docs=12)
    assert len(small.queries) == 5 and len(small.corpus) == 12
    judged = {d for rels in small.qrels.values() for d in rels}
    assert judged <= set(small.corpus) and set(small.qrels) == set(small.queries)
    assert subsample(data, max_queries=5, max_docs=12) == small
    tight = subsample(data, max_queries=5, max_docs=3)  # fewer than the judged: every judged one stays
    assert set(tight.corpus) == {d for rels in tight.qrels.values() for d in rels}


# ------------------------------------------------------------------ dense and BM25 runs
def test_evaluate_retrieval_equals_brute_force_search_and_pytrec_eval(tmp_path: Path) -> None:
    data, _ = load_retrieval(make_beir(tmp_path / "beir"))
    rng = np.random.default_rng(0)
    table: dict[str, np.ndarray] = {}
    seen: list[tuple[str, str | None]] = []

    def embed(texts: list[str], instruction: str | None) -> np.ndarray:
        seen.extend((t, instruction) for t in texts)
        return np.stack([table.setdefault(t, rng.normal(size=8)) for t in texts])

    got = evaluate_retrieval(embed, data, query_instruction="Find the passage")
    assert {i for t, i in seen if t in data.queries.values()} == {"Find the passage"}
    assert {i for t, i in seen if t in data.corpus.values()} == {None}
    unit = lambda v: v / np.linalg.norm(v)
    run = {
        q: {d: float(unit(table[qt]) @ unit(table[dt])) for d, dt in data.corpus.items()}
        for q, qt in data.queries.items()
    }
    assert_same_scores(got, trec_reference(run, data.qrels))
    assert (got["queries"], got["documents"]) == (3, 6)
    truncated = evaluate_retrieval(embed, data, dimensions=2)
    run2 = {
        q: {d: float(unit(table[qt][:2]) @ unit(table[dt][:2])) for d, dt in data.corpus.items()}
        for q, qt in data.queries.items()
    }
    assert_same_scores(truncated, trec_reference(run2, data.qrels))


def lucene_bm25(docs: list[list[str]], query: list[str], k1: float, b: float) -> np.ndarray:
    """BM25 as Lucene (8 and later) scores it, bm25s's method="lucene", written out: Robertson's idf made
    non-negative, and the term frequency saturated without the constant (k1 + 1) factor, which Lucene
    dropped as it does not change a ranking."""
    n, avgdl = len(docs), np.mean([len(d) for d in docs])
    scores = np.zeros(n)
    for word in set(query):
        df = sum(word in d for d in docs)
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, doc in enumerate(docs):
            tf = doc.count(word)
            scores[i] += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl)) if tf else 0.0
    return scores


def test_bm25_scores_follow_lucene_and_its_metrics_equal_pytrec_eval(tmp_path: Path) -> None:
    data, _ = load_retrieval(make_beir(tmp_path / "beir"))
    run = bm25_run(data)
    dids = list(data.corpus)
    docs = bm25_tokenize([data.corpus[d] for d in dids], return_ids=False)
    assert "the" not in docs[2] and "capital" in docs[2]  # English stopwords are dropped
    for qid, query in zip(
        data.queries, bm25_tokenize(list(data.queries.values()), return_ids=False), strict=True
    ):
        ref = lucene_bm25(docs, query, BM25_SETTINGS["k1"], BM25_SETTINGS["b"])
        expected = {dids[j]: ref[j] for j in np.nonzero(ref > 0)[0]}
        assert run[qid] == pytest.approx(expected, rel=1e-5), qid
    got = evaluate_bm25(data)
    assert_same_scores(got, trec_reference(run, data.qrels))
    assert got["ndcg_at_10"] > 50  # the queries share words with their passages


# ------------------------------------------------------------------ the command
def app():
    from decoder2vec.cli import app as main_app

    return main_app


def test_eval_retrieval_cli_end_to_end_with_bm25(tmp_path: Path, tiny_byte_llama: Path, tiny_encoder) -> None:
    folder = make_beir(tmp_path / "beir")
    report = tmp_path / "report"
    args = [
        "eval",
        "retrieval",
        str(folder),
        "--model",
        str(tiny_byte_llama),
        "--bm25",
        "--report",
        str(report),
    ]
    result = CliRunner().invoke(
        app(), [*args, "--query-instruction", "Find the passage", "--batch-size", "4"]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((report / "results.json").read_text())
    assert saved["split"] == "dev" and [r["system"] for r in saved["results"]] == [
        str(tiny_byte_llama),
        "bm25",
    ]
    model_row, bm25_row = saved["results"]
    assert bm25_row["settings"] == BM25_SETTINGS
    data, _ = load_retrieval(folder)
    # the model's row, recomputed independently: its embeddings, brute-force cosine, pytrec_eval
    q = tiny_encoder.encode(list(data.queries.values()), instruction="Find the passage")
    d = tiny_encoder.encode(list(data.corpus.values()))
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    run = {
        qid: {did: float(sims[i, j]) for j, did in enumerate(data.corpus)}
        for i, qid in enumerate(data.queries)
    }
    for key, value in trec_reference(run, data.qrels).items():
        assert model_row[key] == pytest.approx(value, abs=1e-3), key
    assert_same_scores(bm25_row, trec_reference(bm25_run(data), data.qrels))
    md = (report / "results.md").read_text()
    assert "nDCG@10" in md and "bm25" in md
    # a second run replaces its own report
    again = CliRunner().invoke(app(), args)
    assert again.exit_code == 0, again.output


def test_eval_retrieval_cli_refuses_bad_input_before_loading_a_model(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "beir")
    (folder / "qrels" / "dev.tsv").write_text(qrels_tsv([("q1", "nope", 1)]))
    result = CliRunner().invoke(
        app(), ["eval", "retrieval", str(folder), "--model", str(tmp_path / "no-model")]
    )
    assert result.exit_code == 1
    assert "dev.tsv:2: corpus-id 'nope'" in result.output
    good = make_beir(tmp_path / "good")
    report = tmp_path / "mine"
    report.mkdir()
    (report / "results.md").write_text("my notes\n")
    result = CliRunner().invoke(
        app(),
        ["eval", "retrieval", str(good), "--model", str(tmp_path / "no-model"), "--report", str(report)],
    )
    assert result.exit_code == 1 and "was not written by" in result.output
    assert (report / "results.md").read_text() == "my notes\n"
