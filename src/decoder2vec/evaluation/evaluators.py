"""Run one :class:`EvalTask` with one encoder: embed what the task needs, then score it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from decoder2vec.evaluation import metrics
from decoder2vec.evaluation.encoders import TextEncoder
from decoder2vec.evaluation.tasks import (
    ClassificationData,
    ClusteringData,
    EvalTask,
    PairClassificationData,
    RerankingData,
    RetrievalData,
    STSData,
)


def encode_unique(
    encoder: TextEncoder,
    texts: Sequence[str],
    *,
    instruction: str | None = None,
    batch_size: int = 32,
    show_progress_bar: bool | None = None,
) -> np.ndarray:
    """Embed ``texts`` once per distinct text and return rows in input order.

    STS and reranking sets repeat sentences; embedding each once is exact (inference is deterministic) and
    saves time on CPU.
    """
    unique = list(dict.fromkeys(texts))
    position = {t: i for i, t in enumerate(unique)}
    emb = np.asarray(
        encoder.encode(
            unique, instruction=instruction, batch_size=batch_size, show_progress_bar=show_progress_bar
        ),
        dtype=np.float32,
    )
    if emb.shape[0] != len(unique):
        raise ValueError(f"encoder returned {emb.shape[0]} embeddings for {len(unique)} texts")
    return emb[[position[t] for t in texts]]


def evaluate_task(
    encoder: TextEncoder,
    task: EvalTask,
    *,
    batch_size: int = 32,
    show_progress_bar: bool | None = None,
) -> dict[str, float]:
    """All scores of ``task`` for ``encoder`` (×100), keyed as in MTEB."""
    d = task.data

    def enc(texts: Sequence[str], instruction: str | None) -> np.ndarray:
        return encode_unique(
            encoder,
            texts,
            instruction=instruction,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
        )

    if isinstance(d, STSData | PairClassificationData):
        n = len(d.sentences1)
        # one call for both sides: length-sorted batching then sees every sentence at once
        emb = enc(list(d.sentences1) + list(d.sentences2), task.instruction)
        if isinstance(d, STSData):
            return metrics.sts_scores(emb[:n], emb[n:], d.scores)
        return metrics.pair_classification_scores(emb[:n], emb[n:], d.labels)
    if isinstance(d, ClassificationData):
        emb = enc(list(d.train_texts) + list(d.test_texts), task.instruction)
        n = len(d.train_texts)
        return metrics.classification_scores(emb[:n], d.train_labels, emb[n:], d.test_labels)
    if isinstance(d, ClusteringData):
        return metrics.clustering_scores(enc(d.texts, task.instruction), d.labels)
    if isinstance(d, RetrievalData):
        qids, dids = list(d.queries), list(d.corpus)
        q = enc([d.queries[i] for i in qids], task.instruction)
        docs = enc([d.corpus[i] for i in dids], None)
        return metrics.retrieval_scores(q, docs, qids, dids, d.qrels)
    if isinstance(d, RerankingData):
        q = enc(d.queries, task.instruction)
        flat = [c for cands in d.candidates for c in cands]
        cand = enc(flat, None)
        splits = np.cumsum([len(c) for c in d.candidates])[:-1]
        return metrics.reranking_scores(q, np.split(cand, splits), d.labels)
    raise TypeError(f"unknown task data {type(d).__name__}")
