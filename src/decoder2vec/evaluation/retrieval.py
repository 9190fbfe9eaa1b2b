"""Retrieval evaluation on a BEIR folder: a dense encoder, and BM25 as the lexical baseline.

``evaluate_retrieval`` embeds the queries (with the task instruction, as LLM2Vec and E5 do) and the
passages (without), ranks the corpus by exact cosine search and scores the run the way trec_eval does
(:func:`decoder2vec.evaluation.metrics.run_scores`). ``evaluate_bm25`` scores bm25s's ranking of the same
folder with the same function, so the two rows of a report differ only in the ranker. Training stages call
``evaluate_retrieval`` on a (subsampled) dev set to select their best checkpoint.

BM25 is :class:`decoder2vec.bm25.BM25` (the pairs engine's too) and needs ``bm25s`` (``pip install
'decoder2vec[search]'``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from decoder2vec.bm25 import BM25, BM25_SETTINGS, bm25_tokenize
from decoder2vec.evaluation.loaders import load_retrieval
from decoder2vec.evaluation.metrics import RETRIEVAL_METRICS, Run, dense_run, run_scores
from decoder2vec.evaluation.tasks import RetrievalData

__all__ = [
    "BM25_SETTINGS",
    "RETRIEVAL_METRICS",
    "bm25_run",
    "bm25_tokenize",
    "encoder_run",
    "evaluate_bm25",
    "evaluate_retrieval",
    "load_dev_set",
    "subsample",
]

# (texts, instruction or None) -> (n, dim) embeddings: what a training loop or a test can pass instead of
# an encoder object
EmbedFn = Callable[[list[str], str | None], np.ndarray]


def _data(folder_or_data: str | Path | RetrievalData, split: str | None) -> tuple[RetrievalData, str | None]:
    if isinstance(folder_or_data, RetrievalData):
        return folder_or_data, split
    return load_retrieval(folder_or_data, split)


def subsample(
    data: RetrievalData, max_queries: int | None = None, max_docs: int | None = None, seed: int = 0
) -> RetrievalData:
    """A smaller, fixed dev set: ``max_queries`` queries drawn with ``seed``, and a corpus of every
    document they judge plus random others up to ``max_docs`` (never fewer than the judged ones: a
    dropped relevant document would make a query unanswerable). Each call with the same arguments
    returns the same subset, so scores along a training run compare like with like."""
    rng = random.Random(seed)
    qids = list(data.queries)
    if max_queries is not None and max_queries < len(qids):
        keep = set(rng.sample(qids, max_queries))
        qids = [q for q in qids if q in keep]  # file order, not draw order
    qrels = {q: data.qrels[q] for q in qids}
    dids = list(data.corpus)
    if max_docs is not None and max_docs < len(dids):
        judged = {d for rels in qrels.values() for d in rels}
        others = [d for d in dids if d not in judged]
        fill = set(rng.sample(others, max(0, min(len(others), max_docs - len(judged)))))
        dids = [d for d in dids if d in judged or d in fill]
    return RetrievalData({q: data.queries[q] for q in qids}, {d: data.corpus[d] for d in dids}, qrels)


def load_dev_set(
    folder: str | Path,
    split: str | None = None,
    max_queries: int | None = None,
    max_docs: int | None = None,
) -> RetrievalData:
    """A retrieval dev set for checkpoint selection: the folder, checked, then :func:`subsample`\\ d."""
    data, _ = load_retrieval(folder, split)
    return subsample(data, max_queries, max_docs)


def _embed(
    encoder: Any,
    texts: list[str],
    instruction: str | None,
    *,
    queries: bool,
    batch_size: int,
    dimensions: int | None,
    show_progress_bar: bool | None,
) -> np.ndarray:
    if hasattr(encoder, "encode_queries") and hasattr(encoder, "encode_documents"):
        # a decoder2vec Encoder: its own query/document entry points, and its own check of ``dimensions``
        kwargs = {"batch_size": batch_size, "dimensions": dimensions, "show_progress_bar": show_progress_bar}
        if queries:
            emb = encoder.encode_queries(texts, instruction=instruction, **kwargs)
        else:
            emb = encoder.encode_documents(texts, **kwargs)
        return np.asarray(emb, dtype=np.float32)
    if hasattr(encoder, "encode"):  # any TextEncoder (sentence-transformers wrapper, Echo, a test double)
        emb = encoder.encode(
            texts, instruction=instruction, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
    elif callable(encoder):
        emb = encoder(texts, instruction)
    else:
        raise TypeError(f"expected an encoder with encode() or a callable, got {type(encoder).__name__}")
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"the encoder returned shape {emb.shape} for {len(texts)} texts")
    if dimensions is not None:
        if not 1 <= dimensions <= emb.shape[1]:
            raise ValueError(f"dimensions={dimensions} is outside 1..{emb.shape[1]} (the embedding width)")
        emb = emb[:, :dimensions]  # Matryoshka truncation, as Encoder.encode(dimensions=...) does
    return emb


def encoder_run(
    encoder: Any,
    data: RetrievalData,
    *,
    query_instruction: str | None = None,
    batch_size: int = 32,
    dimensions: int | None = None,
    top_k: int = 100,
    show_progress_bar: bool | None = None,
) -> Run:
    """Each query's ``top_k`` documents by cosine similarity of ``encoder``'s embeddings."""
    qids, dids = list(data.queries), list(data.corpus)
    common = {"batch_size": batch_size, "dimensions": dimensions, "show_progress_bar": show_progress_bar}
    q = _embed(encoder, [data.queries[i] for i in qids], query_instruction, queries=True, **common)
    d = _embed(encoder, [data.corpus[i] for i in dids], None, queries=False, **common)
    return dense_run(q, d, qids, dids, top_k=top_k)


def bm25_run(
    data: RetrievalData,
    *,
    k1: float = BM25_SETTINGS["k1"],
    b: float = BM25_SETTINGS["b"],
    method: str = BM25_SETTINGS["method"],
    top_k: int = 100,
    show_progress: bool = False,
) -> Run:
    """Each query's ``top_k`` documents by bm25s's BM25 score (``method``: lucene, robertson, atire, ...)."""
    qids, dids = list(data.queries), list(data.corpus)
    index = BM25([data.corpus[d] for d in dids], k1=k1, b=b, method=method, show_progress=show_progress)
    k = min(top_k, len(dids))
    run: Run = {}
    for qid, ids in zip(qids, index.query_ids([data.queries[q] for q in qids]), strict=True):
        # words the corpus lacks score nothing; a query with none of its words in it ranks nothing
        if not ids:
            run[qid] = {}
            continue
        scores = index.scores(ids)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(dids) else np.arange(len(dids))
        # documents sharing no word with the query score 0 and are not retrieved, as in Lucene
        run[qid] = {dids[j]: float(scores[j]) for j in top if scores[j] > 0}
    return run


def evaluate_retrieval(
    encoder: Any,
    folder_or_data: str | Path | RetrievalData,
    *,
    query_instruction: str | None = None,
    split: str | None = None,
    batch_size: int = 32,
    dimensions: int | None = None,
    top_k: int = 100,
    show_progress_bar: bool | None = None,
) -> dict[str, Any]:
    """nDCG@10, MRR@10, recall@10 and recall@100 (×100) of ``encoder`` on a retrieval folder or data.

    ``encoder`` is a decoder2vec ``Encoder`` (queries through ``encode_queries``, passages through
    ``encode_documents``), any object with ``encode(texts, instruction=..., batch_size=...)``, or a callable
    ``(texts, instruction) -> embeddings``. ``query_instruction`` is prepended to queries only. Returns the
    scores plus ``queries``/``documents`` (how many were ranked) and ``split`` (the qrels file scored).
    """
    data, split = _data(folder_or_data, split)
    run = encoder_run(
        encoder,
        data,
        query_instruction=query_instruction,
        batch_size=batch_size,
        dimensions=dimensions,
        top_k=top_k,
        show_progress_bar=show_progress_bar,
    )
    return {
        **run_scores(run, data.qrels),
        "queries": len(data.queries),
        "documents": len(data.corpus),
        "split": split,
    }


def evaluate_bm25(
    folder_or_data: str | Path | RetrievalData,
    *,
    split: str | None = None,
    k1: float = BM25_SETTINGS["k1"],
    b: float = BM25_SETTINGS["b"],
    method: str = BM25_SETTINGS["method"],
    top_k: int = 100,
) -> dict[str, Any]:
    """The same scores as :func:`evaluate_retrieval` for bm25s's BM25 on the same data."""
    data, split = _data(folder_or_data, split)
    run = bm25_run(data, k1=k1, b=b, method=method, top_k=top_k)
    return {
        **run_scores(run, data.qrels),
        "queries": len(data.queries),
        "documents": len(data.corpus),
        "split": split,
    }
