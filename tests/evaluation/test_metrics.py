"""Each metric against an independent computation: scipy, scikit-learn, pytrec_eval, a hand-worked example,
or mteb itself run on the same embeddings (through a lookup-table model on an in-memory mteb task)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import average_precision_score, v_measure_score
from sklearn.metrics.pairwise import paired_cosine_distances

from decoder2vec.evaluation import metrics


def _pairs_with_cosines(cosines: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """2-D pairs whose cosine similarities are exactly ``cosines``: (1, 0) vs (cos t, sin t), scaled."""
    c = np.asarray(cosines)
    a = np.stack([np.ones_like(c), np.zeros_like(c)], axis=1) * 3.0
    b = np.stack([c, np.sqrt(1 - c**2)], axis=1) * 0.5
    return a, b


def test_sts_matches_scipy_on_random_embeddings() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    gold = rng.uniform(0, 5, size=50)
    cos = 1 - paired_cosine_distances(a, b)
    got = metrics.sts_scores(a, b, gold)
    assert got["cosine_spearman"] == pytest.approx(100 * spearmanr(gold, cos)[0], abs=1e-9)
    assert got["cosine_pearson"] == pytest.approx(100 * pearsonr(gold, cos)[0], abs=1e-9)


def test_sts_hand_worked_rank_order() -> None:
    # cosines 0.9 > 0.1 > -0.5 with gold 5 > 2 > 0: perfect rank agreement, Spearman exactly 100
    a, b = _pairs_with_cosines([0.9, 0.1, -0.5])
    got = metrics.sts_scores(a, b, [5.0, 2.0, 0.0])
    assert got["cosine_spearman"] == pytest.approx(100.0)
    # reversing the gold order flips the sign
    assert metrics.sts_scores(a, b, [0.0, 2.0, 5.0])["cosine_spearman"] == pytest.approx(-100.0)


def test_pair_classification_hand_worked() -> None:
    # sorted cosines 0.9(1) 0.8(1) 0.7(0) 0.6(1) 0.1(0)
    a, b = _pairs_with_cosines([0.9, 0.8, 0.7, 0.6, 0.1])
    y = [1, 1, 0, 1, 0]
    got = metrics.pair_classification_scores(a, b, y)
    # AP = mean precision at each positive: (1/1 + 2/2 + 3/4) / 3
    assert got["cosine_ap"] == pytest.approx(100 * (1 + 1 + 0.75) / 3)
    # best threshold accuracy: cut after 0.8 or after 0.6 gives 4 of 5 right
    assert got["cosine_accuracy"] == pytest.approx(80.0)
    # best F1 at the cut after 0.6: precision 3/4, recall 1 -> 6/7
    assert got["cosine_f1"] == pytest.approx(100 * 6 / 7)


def test_pair_classification_matches_sklearn_and_mteb_threshold_search() -> None:
    pytest.importorskip("mteb", reason="mteb is the optional [mteb] extra")
    from mteb.abstasks.pair_classification import AbsTaskPairClassification

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(80, 6)), rng.normal(size=(80, 6))
    y = rng.integers(0, 2, size=80)
    cos = 1 - paired_cosine_distances(a, b)
    got = metrics.pair_classification_scores(a, b, y)
    assert got["cosine_ap"] == pytest.approx(100 * average_precision_score(y, cos))
    acc, _ = AbsTaskPairClassification._find_best_acc_and_threshold(None, cos.tolist(), y, True)
    f1, *_ = AbsTaskPairClassification._find_best_f1_and_threshold(None, cos.tolist(), y, True)
    assert got["cosine_accuracy"] == pytest.approx(100 * acc)
    assert got["cosine_f1"] == pytest.approx(100 * f1)


def test_pair_classification_rejects_non_binary_labels() -> None:
    a, b = _pairs_with_cosines([0.5, 0.2])
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.pair_classification_scores(a, b, [0, 2])


def test_classification_separable_data_scores_100() -> None:
    rng = np.random.default_rng(2)
    centers = np.eye(3) * 10
    labels = np.repeat(["a", "b", "c"], 20)
    x = centers[np.repeat([0, 1, 2], 20)] + rng.normal(scale=0.1, size=(60, 3))
    got = metrics.classification_scores(x[::2], labels[::2], x[1::2], labels[1::2])
    assert got == {
        "accuracy": pytest.approx(100.0),
        "f1": pytest.approx(100.0),
        "f1_weighted": pytest.approx(100.0),
    }


def test_classification_full_training_set_matches_sklearn_and_macro_f1_by_hand() -> None:
    # a 1-D problem: the classifier splits at the origin, so the test predictions are known in advance
    x_train = np.array([[-2.0], [-1.5], [-1.0], [1.0], [1.5], [2.0]])
    y_train = ["neg", "neg", "neg", "pos", "pos", "pos"]
    x_test = np.array([[-3.0], [-0.5], [0.7], [2.5]])
    y_test = ["neg", "pos", "pos", "pos"]  # the second is wrong on purpose: predicted neg
    got = metrics.classification_scores(x_train, y_train, x_test, y_test, samples_per_label=None)
    # predictions neg, neg, pos, pos -> accuracy 3/4; F1(neg) = 2/3, F1(pos) = 0.8 -> macro 11/15
    assert got["accuracy"] == pytest.approx(75.0)
    assert got["f1"] == pytest.approx(100 * (2 / 3 + 0.8) / 2)


def _lookup_model(table: dict[str, np.ndarray]):
    """An mteb encoder whose vectors come from ``table``: mteb and our metrics see identical embeddings."""
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    class Lookup(AbsEncoder):
        mteb_model_meta = ModelMeta.create_empty(
            {
                "name": "test/lookup",
                "revision": "1",
                "similarity_fn_name": ScoringFunction.COSINE,
                "framework": ["PyTorch"],
            }
        )

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            return np.stack([table[t] for batch in inputs for t in batch["text"]]).astype(np.float32)

    return Lookup()


def test_classification_matches_mteb_undersampled_pipeline() -> None:
    mteb = pytest.importorskip("mteb", reason="mteb is the optional [mteb] extra")
    from datasets import Dataset, DatasetDict
    from mteb.mocks.mock_tasks.classification import MockClassificationTask

    rng = np.random.default_rng(3)
    n_train, n_test = 90, 40
    texts = [f"text {i}" for i in range(n_train + n_test)]
    labels = rng.integers(0, 3, size=n_train + n_test)
    # overlapping classes, so that which 8 examples per label are drawn changes the score
    emb = rng.normal(size=(len(texts), 5)) + labels[:, None] * 0.8
    table = dict(zip(texts, emb, strict=True))

    class Task(MockClassificationTask):
        def load_data(self, num_proc=None, **kwargs):
            self.dataset = DatasetDict(
                {
                    "train": Dataset.from_dict({"text": texts[:n_train], "label": labels[:n_train].tolist()}),
                    "test": Dataset.from_dict({"text": texts[n_train:], "label": labels[n_train:].tolist()}),
                }
            )
            self.data_loaded = True

    res = mteb.evaluate(_lookup_model(table), Task(), cache=None, show_progress_bar=False)
    expected = res.task_results[0].scores["test"][0]
    got = metrics.classification_scores(
        emb[:n_train], labels[:n_train].tolist(), emb[n_train:], labels[n_train:].tolist()
    )
    assert got["accuracy"] == pytest.approx(100 * expected["accuracy"], abs=1e-6)
    assert got["f1"] == pytest.approx(100 * expected["f1"], abs=1e-6)
    assert got["f1_weighted"] == pytest.approx(100 * expected["f1_weighted"], abs=1e-6)


def test_sts_and_clustering_match_mteb() -> None:
    mteb = pytest.importorskip("mteb", reason="mteb is the optional [mteb] extra")
    from datasets import Dataset, DatasetDict
    from mteb.mocks.mock_tasks.clustering import MockClusteringTask
    from mteb.mocks.mock_tasks.sts import MockSTSTask

    rng = np.random.default_rng(4)
    s1 = [f"left {i}" for i in range(30)]
    s2 = [f"right {i}" for i in range(30)]
    gold = rng.uniform(0, 1, size=30)
    cl_texts = [f"doc {i}" for i in range(60)]
    cl_labels = np.repeat([0, 1, 2], 20)
    cl_emb = rng.normal(size=(60, 4)) + cl_labels[:, None] * 1.5
    table = {t: rng.normal(size=6) for t in s1 + s2} | dict(zip(cl_texts, cl_emb, strict=True))

    class STS(MockSTSTask):
        def load_data(self, num_proc=None, **kwargs):
            self.dataset = DatasetDict(
                {"test": Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": gold.tolist()})}
            )
            self.data_loaded = True

    class Clust(MockClusteringTask):
        def load_data(self, num_proc=None, **kwargs):
            self.dataset = DatasetDict(
                {"test": Dataset.from_dict({"sentences": [cl_texts], "labels": [cl_labels.tolist()]})}
            )
            self.data_loaded = True

    res = mteb.evaluate(_lookup_model(table), [STS(), Clust()], cache=None, show_progress_bar=False)
    by_name = {r.task_name: r.scores["test"][0] for r in res.task_results}
    # the lookup model hands mteb float32 vectors, hence agreement to 1e-4 rather than exactly
    sts = metrics.sts_scores(np.stack([table[t] for t in s1]), np.stack([table[t] for t in s2]), gold)
    assert sts["cosine_spearman"] == pytest.approx(100 * by_name["MockSTSTask"]["cosine_spearman"], abs=1e-4)
    assert sts["cosine_pearson"] == pytest.approx(100 * by_name["MockSTSTask"]["cosine_pearson"], abs=1e-4)
    clust = metrics.clustering_scores(cl_emb, cl_labels.tolist())
    assert clust["v_measure"] == pytest.approx(100 * by_name["MockClusteringTask"]["v_measure"], abs=1e-6)


def test_clustering_well_separated_blobs_and_label_names() -> None:
    rng = np.random.default_rng(5)
    centers = np.array([[0, 0], [50, 0], [0, 50]])
    idx = np.repeat([0, 1, 2], 15)
    x = centers[idx] + rng.normal(size=(45, 2))
    names = np.array(["x", "y", "z"])[idx].tolist()
    assert metrics.clustering_scores(x, names)["v_measure"] == pytest.approx(100.0)
    # against scikit-learn on a clustering that is half wrong: labels from one blob split across two
    wrong = idx.copy()
    wrong[:7] = 1
    assert v_measure_score(wrong, idx) < 1.0
    assert metrics.clustering_scores(x, wrong.tolist())["v_measure"] == pytest.approx(
        100 * v_measure_score(wrong, idx)
    )


def _trec_reference(sims: np.ndarray, qids: list[str], dids: list[str], qrels: dict) -> dict[str, float]:
    pytrec_eval = pytest.importorskip("pytrec_eval", reason="trec_eval bindings come with the [mteb] extra")

    run = {q: {d: float(sims[i, j]) for j, d in enumerate(dids)} for i, q in enumerate(qids)}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "recip_rank"})
    per_q = ev.evaluate(run)
    # MRR@10 by hand from the same trec ordering (score desc, doc id desc)
    rr = []
    for i, q in enumerate(qids):
        order = sorted(dids, key=lambda d: (run[q][d], d), reverse=True)[:10]
        rr.append(next((1 / (r + 1) for r, d in enumerate(order) if qrels[q].get(d, 0) > 0), 0.0))
    return {
        "ndcg_at_10": 100 * np.mean([per_q[q]["ndcg_cut_10"] for q in qids]),
        "recall_at_100": 100 * np.mean([per_q[q]["recall_100"] for q in qids]),
        "mrr_at_10": 100 * np.mean(rr),
    }


def test_retrieval_matches_pytrec_eval_with_graded_relevance_and_batching() -> None:
    rng = np.random.default_rng(6)
    n_q, n_d = 23, 180
    q, d = rng.normal(size=(n_q, 8)), rng.normal(size=(n_d, 8))
    qids = [f"q{i}" for i in range(n_q)]
    dids = [f"d{j:03d}" for j in range(n_d)]
    qrels = {}
    for qid in qids:
        picks = rng.choice(n_d, size=4, replace=False)
        qrels[qid] = {dids[picks[0]]: 2, dids[picks[1]]: 1, dids[picks[2]]: 1, dids[picks[3]]: 0}
    got = metrics.retrieval_scores(q, d, qids, dids, qrels, batch_size=5, top_k=100)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    ref = _trec_reference(sims, qids, dids, qrels)
    for key in ("ndcg_at_10", "mrr_at_10", "recall_at_100"):
        assert got[key] == pytest.approx(ref[key], abs=1e-4), key


def test_retrieval_hand_worked() -> None:
    # one query; the docs are ranked d1 > d2 > d3 by construction; only d2 is relevant
    q = np.array([[1.0, 0.0]])
    docs = np.array([[1.0, 0.0], [1.0, 0.5], [0.0, 1.0]])
    got = metrics.retrieval_scores(q, docs, ["q"], ["d1", "d2", "d3"], {"q": {"d2": 1}})
    assert got["mrr_at_10"] == pytest.approx(50.0)
    assert got["ndcg_at_10"] == pytest.approx(100 / np.log2(3))
    assert got["recall_at_100"] == pytest.approx(100.0)


def test_retrieval_without_any_positive_is_an_error() -> None:
    with pytest.raises(ValueError, match="no query"):
        metrics.retrieval_scores(np.ones((1, 2)), np.ones((2, 2)), ["q"], ["a", "b"], {"q": {"a": 0}})


def test_reranking_matches_sklearn_ap_and_hand_mrr() -> None:
    rng = np.random.default_rng(7)
    queries = rng.normal(size=(6, 5))
    cands = [rng.normal(size=(n, 5)) for n in (4, 7, 3, 9, 5, 12)]
    labels = [rng.permutation([1] + [0] * (len(c) - 2) + [int(rng.integers(0, 2))]).tolist() for c in cands]
    got = metrics.reranking_scores(queries, cands, labels)
    aps, rrs = [], []
    for qv, c, y in zip(queries, cands, labels, strict=True):
        sims = 1 - paired_cosine_distances(np.repeat(qv[None], len(c), axis=0), c)
        aps.append(average_precision_score(y, sims))
        ranked = [y[i] for i in np.argsort(-sims)][:10]
        rrs.append(1 / (ranked.index(1) + 1) if 1 in ranked else 0.0)
    assert got["map"] == pytest.approx(100 * np.mean(aps))
    assert got["mrr_at_10"] == pytest.approx(100 * np.mean(rrs))


def test_reranking_hand_worked() -> None:
    q = np.array([[1.0, 0.0]])
    # candidate cosines 1.0 (neg), 0.8 (pos), 0.0 (pos) -> AP = (1/2 + 2/3) / 2, first hit at rank 2
    c = [np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])]
    got = metrics.reranking_scores(q, c, [[0, 1, 1]])
    assert got["map"] == pytest.approx(100 * (0.5 + 2 / 3) / 2)
    assert got["mrr_at_10"] == pytest.approx(50.0)
