"""Scores from embeddings, computed the way MTEB (v2) computes them.

Every score is returned ×100 (MTEB stores 0–1 and its leaderboard shows ×100; one scale everywhere keeps the
report tables comparable). Where MTEB has a specific recipe (the threshold search of pair classification,
the under-sampled logistic regression of classification, MiniBatchKMeans for clustering, trec_eval's
tie-breaking for retrieval) it is followed step for step and the MTEB source is named in a comment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.cluster import MiniBatchKMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, v_measure_score

__all__ = [
    "classification_scores",
    "clustering_scores",
    "cosine_matrix",
    "dense_run",
    "pair_classification_scores",
    "paired_cosine",
    "reranking_scores",
    "retrieval_scores",
    "run_scores",
    "sts_scores",
]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    # a zero vector has no direction; leave it zero (cosine 0 with everything) instead of producing NaN
    return x / np.where(norms == 0, 1.0, norms)


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row i of ``a`` with row i of ``b``."""
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings differ in shape: {a.shape} vs {b.shape}")
    return np.sum(_unit_rows(a) * _unit_rows(b), axis=-1)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All-pairs cosine similarity, shape (len(a), len(b))."""
    return _unit_rows(a) @ _unit_rows(b).T


def sts_scores(emb1: np.ndarray, emb2: np.ndarray, gold: Sequence[float]) -> dict[str, float]:
    """Spearman and Pearson correlation (×100) between pair cosine similarity and gold scores.

    MTEB's ``AbsTaskSTS`` min-max normalises the gold scores first; correlations are invariant to that
    affine map, so the raw scores give the same numbers.
    """
    gold_arr = np.asarray(gold, dtype=np.float64)
    cos = paired_cosine(emb1, emb2)
    if len(gold_arr) != len(cos):
        raise ValueError(f"{len(cos)} pairs but {len(gold_arr)} gold scores")
    return {
        "cosine_spearman": 100.0 * float(spearmanr(gold_arr, cos)[0]),
        "cosine_pearson": 100.0 * float(pearsonr(gold_arr, cos)[0]),
    }


def _best_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    # mteb/abstasks/pair_classification.py::_find_best_acc_and_threshold, high score = similar
    rows = sorted(zip(scores.tolist(), labels.tolist(), strict=True), key=lambda r: r[0], reverse=True)
    best, positives, remaining_negatives = 0.0, 0, int(np.sum(labels == 0))
    for i in range(len(rows) - 1):
        if rows[i][1] == 1:
            positives += 1
        else:
            remaining_negatives -= 1
        if rows[i][0] == rows[i + 1][0]:  # a threshold cannot split tied scores
            continue
        best = max(best, (positives + remaining_negatives) / len(labels))
    return best


def _best_f1(scores: np.ndarray, labels: np.ndarray) -> float:
    # mteb/abstasks/pair_classification.py::_find_best_f1_and_threshold
    rows = sorted(zip(scores.tolist(), labels.tolist(), strict=True), key=lambda r: r[0], reverse=True)
    best, correct, total_pos = 0.0, 0, int(np.sum(labels))
    for i, (score, label) in enumerate(rows[:-1]):
        if label == 1:
            correct += 1
        if score == rows[i + 1][0] or correct == 0:
            continue
        precision, recall = correct / (i + 1), correct / total_pos
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def pair_classification_scores(emb1: np.ndarray, emb2: np.ndarray, labels: Sequence[int]) -> dict[str, float]:
    """Average precision of the cosine score (MTEB's ``cosine_ap``), plus best-threshold accuracy and F1."""
    y = np.asarray(labels, dtype=np.int64)
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("pair classification labels must be 0 or 1")
    cos = paired_cosine(emb1, emb2)
    return {
        "cosine_ap": 100.0 * float(average_precision_score(y, cos)),
        "cosine_accuracy": 100.0 * _best_accuracy(cos, y),
        "cosine_f1": 100.0 * _best_f1(cos, y),
    }


def _undersample(labels: Sequence, samples_per_label: int, seed: int, idxs: list[int]) -> list[int]:
    # mteb/abstasks/classification.py::_undersample_data: a fresh RandomState(seed) shuffles the *previous*
    # experiment's order in place, so each experiment draws a different subset, reproducibly.
    np.random.RandomState(seed).shuffle(idxs)
    counts: dict = defaultdict(int)
    chosen = []
    for i in idxs:
        if counts[labels[i]] < samples_per_label:
            chosen.append(i)
            counts[labels[i]] += 1
    return chosen


def classification_scores(
    train_emb: np.ndarray,
    train_labels: Sequence,
    test_emb: np.ndarray,
    test_labels: Sequence,
    *,
    n_experiments: int = 10,
    samples_per_label: int | None = 8,
    seed: int = 42,
    max_iter: int = 100,
) -> dict[str, float]:
    """Logistic regression on frozen embeddings: accuracy, macro-F1 and weighted F1 (×100), mean over runs.

    Defaults are MTEB's ``AbsTaskClassification``: 10 experiments, each trained on ``samples_per_label``
    examples per class drawn as MTEB draws them, ``LogisticRegression(max_iter=100, random_state=seed)``.
    ``samples_per_label=None`` trains once on the whole training set.
    """
    train_labels = list(train_labels)
    y_test = list(test_labels)
    if samples_per_label is None:
        subsets = [list(range(len(train_labels)))]
    else:
        order = list(range(len(train_labels)))
        subsets = [_undersample(train_labels, samples_per_label, seed, order) for _ in range(n_experiments)]
    runs = []
    for subset in subsets:
        clf = LogisticRegression(max_iter=max_iter, random_state=seed)
        clf.fit(train_emb[subset], [train_labels[i] for i in subset])
        pred = clf.predict(test_emb)
        runs.append(
            (
                accuracy_score(y_test, pred),
                f1_score(y_test, pred, average="macro"),
                f1_score(y_test, pred, average="weighted"),
            )
        )
    acc, f1, f1w = np.mean(np.asarray(runs), axis=0)
    return {"accuracy": 100.0 * float(acc), "f1": 100.0 * float(f1), "f1_weighted": 100.0 * float(f1w)}


def clustering_scores(
    emb: np.ndarray, labels: Sequence, *, seed: int = 42, batch_size: int = 500
) -> dict[str, float]:
    """V-measure (×100) of MiniBatchKMeans with k = number of gold labels (MTEB's legacy clustering)."""
    labels = list(labels)
    k = len(set(labels))
    if k < 2:
        raise ValueError("clustering needs at least two distinct labels")
    # mteb/_evaluators/clustering_evaluator.py uses exactly these settings
    km = MiniBatchKMeans(n_clusters=k, batch_size=batch_size, n_init="auto", random_state=seed)
    km.fit(np.asarray(emb, dtype=np.float32))
    return {"v_measure": 100.0 * float(v_measure_score(labels, km.labels_))}


Run = dict[str, dict[str, float]]  # query id -> {doc id: score}, as trec_eval / pytrec_eval take a run


def _ranked(doc_scores: Iterable[tuple[str, float]]) -> list[str]:
    # trec_eval (and so pytrec_eval and MTEB's mrr) order by score, ties broken by doc id, both descending
    return [d for d, _ in sorted(doc_scores, key=lambda kv: (kv[1], kv[0]), reverse=True)]


def _query_metrics(ranking: list[str], rels: Mapping[str, int]) -> tuple[float, float, float, float]:
    """nDCG@10, MRR@10, recall@10, recall@100 of one ranked list."""
    relevant = {d for d, r in rels.items() if r > 0}
    # nDCG as trec_eval's ndcg_cut: linear gain, log2 discount, ideal DCG over all judged-relevant docs
    dcg = sum(rels.get(d, 0) / np.log2(rank + 2) for rank, d in enumerate(ranking[:10]) if rels.get(d, 0) > 0)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:10]
    idcg = sum(r / np.log2(rank + 2) for rank, r in enumerate(ideal))
    rr = next((1.0 / (rank + 1) for rank, d in enumerate(ranking[:10]) if d in relevant), 0.0)
    recall = [len(relevant.intersection(ranking[:k])) / len(relevant) for k in (10, 100)]
    return dcg / idcg, rr, recall[0], recall[1]


RETRIEVAL_METRICS = ("ndcg_at_10", "mrr_at_10", "recall_at_10", "recall_at_100")


def run_scores(
    run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """nDCG@10, MRR@10, recall@10 and recall@100 (×100) of a run, mean over the queries with a relevant doc.

    Follows trec_eval (``ndcg_cut_10``, ``recall_10``, ``recall_100``, and ``recip_rank`` of the run cut at
    10): documents ordered by score, ties by doc id, both descending. A judged query the run does not rank
    scores 0 (trec_eval would leave it out of its mean; here a missing query is the system's failure).
    """
    per_query = [
        _query_metrics(_ranked(run.get(qid, {}).items()), rels)
        for qid, rels in qrels.items()
        if any(r > 0 for r in rels.values())
    ]
    if not per_query:
        raise ValueError("no query has a relevant document")
    ndcg, mrr, r10, r100 = np.mean(np.asarray(per_query), axis=0)
    return {
        "ndcg_at_10": 100.0 * float(ndcg),
        "mrr_at_10": 100.0 * float(mrr),
        "recall_at_10": 100.0 * float(r10),
        "recall_at_100": 100.0 * float(r100),
    }


def dense_run(
    query_emb: np.ndarray,
    doc_emb: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    *,
    batch_size: int = 256,
    top_k: int = 100,
) -> Run:
    """Exact cosine search by batched matrix product: each query's ``top_k`` documents and their cosine."""
    if len(query_ids) != len(query_emb) or len(doc_ids) != len(doc_emb):
        raise ValueError("ids and embeddings differ in length")
    doc_unit = _unit_rows(doc_emb).astype(np.float32)
    k = min(top_k, len(doc_ids))
    run: Run = {}
    for start in range(0, len(query_ids), batch_size):
        q = _unit_rows(query_emb[start : start + batch_size]).astype(np.float32)
        sims = q @ doc_unit.T
        # argpartition keeps the top k per row in O(n); the exact order is settled by _ranked
        top = (
            np.argpartition(-sims, k - 1, axis=1)[:, :k]
            if k < len(doc_ids)
            else np.tile(np.arange(k), (len(q), 1))
        )
        for row, qid in enumerate(query_ids[start : start + batch_size]):
            run[qid] = {doc_ids[j]: float(sims[row, j]) for j in top[row]}
    return run


def retrieval_scores(
    query_emb: np.ndarray,
    doc_emb: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    batch_size: int = 256,
    top_k: int = 100,
) -> dict[str, float]:
    """:func:`run_scores` of an exact cosine search (:func:`dense_run`) over the given embeddings.

    Only queries with at least one relevant document count (as in trec_eval, a query with no judgement has
    nothing to score). ``top_k`` documents are kept per query, enough for recall@100.
    """
    run = dense_run(query_emb, doc_emb, query_ids, doc_ids, batch_size=batch_size, top_k=top_k)
    return run_scores(run, {q: qrels[q] for q in query_ids if q in qrels})


def reranking_scores(
    query_emb: np.ndarray, candidate_emb: Sequence[np.ndarray], candidate_labels: Sequence[Sequence[int]]
) -> dict[str, float]:
    """MAP and MRR@10 (×100) of ranking each query's candidates by cosine similarity.

    ``candidate_emb[i]`` holds query i's candidates, ``candidate_labels[i]`` their 0/1 relevance. Average
    precision is taken over the whole candidate list, as MTEB's reranking evaluator (v1) did with
    scikit-learn; MRR is cut at 10 like MTEB's ``mrr_at_10``.
    """
    aps, rrs = [], []
    for q, cands, labels in zip(query_emb, candidate_emb, candidate_labels, strict=True):
        y = np.asarray(labels, dtype=np.int64)
        if y.sum() == 0:
            raise ValueError("a reranking query has no relevant candidate")
        sims = cosine_matrix(q[None, :], cands)[0]
        aps.append(average_precision_score(y, sims))
        # stable sort on -score: ties keep the candidates' given order
        order = np.argsort(-sims, kind="stable")[:10]
        hit = np.nonzero(y[order])[0]
        rrs.append(1.0 / (hit[0] + 1) if len(hit) else 0.0)
    return {"map": 100.0 * float(np.mean(aps)), "mrr_at_10": 100.0 * float(np.mean(rrs))}
