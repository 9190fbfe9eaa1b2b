"""Losses against hand computations written with explicit loops (math / numpy), not the library."""

import math

import numpy as np
import torch

from decoder2vec.training.losses import (
    false_negative_mask,
    hard_negative_loss,
    matryoshka_loss,
    simcse_loss,
)
from decoder2vec.training.masking import IGNORE_INDEX
from tests.training.reference import mntp_accuracy, mntp_loss


def log_softmax_row(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_mntp_loss_uses_previous_position():
    torch.manual_seed(0)
    B, L, V = 2, 6, 11
    logits = torch.randn(B, L, V, dtype=torch.float64)
    labels = torch.full((B, L), IGNORE_INDEX)
    labels[0, 2], labels[0, 5], labels[1, 1] = 7, 3, 9
    # Hand computation: token at i is predicted from the output at i - 1.
    terms = []
    for b, i in [(0, 2), (0, 5), (1, 1)]:
        row = logits[b, i - 1].tolist()
        terms.append(-log_softmax_row(row)[int(labels[b, i])])
    expected = sum(terms) / len(terms)
    assert abs(mntp_loss(logits, labels).item() - expected) < 1e-5
    # An unshifted loss would be different: the test can tell.
    unshifted = (
        sum(-log_softmax_row(logits[b, i].tolist())[int(labels[b, i])] for b, i in [(0, 2), (0, 5), (1, 1)])
        / 3
    )
    assert abs(unshifted - expected) > 1e-3


def test_mntp_accuracy_counts_shifted_argmax():
    logits = torch.zeros(1, 4, 5)
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX, 4]])
    logits[0, 0, 2] = 5.0  # right: output 0 predicts token 1
    logits[0, 2, 1] = 5.0  # wrong: output 2 should predict 4
    assert mntp_accuracy(logits, labels) == (1, 2)


def test_simcse_loss_matches_loop():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    t = 0.05
    total = 0.0
    for i in range(5):
        row = [cosine(a[i], b[j]) / t for j in range(5)]
        total += -log_softmax_row(row)[i]
    expected = total / 5
    got = simcse_loss(torch.tensor(a), torch.tensor(b), temperature=t).item()
    assert math.isclose(got, expected, rel_tol=1e-5)


def test_hard_negative_loss_matches_loop():
    rng = np.random.default_rng(1)
    B, k, D = 4, 2, 6
    q, p, n = rng.normal(size=(B, D)), rng.normal(size=(B, D)), rng.normal(size=(B * k, D))
    t = 0.02
    candidates = list(p) + list(n)  # every query sees every positive and every hard negative
    total = 0.0
    for i in range(B):
        row = [cosine(q[i], c) / t for c in candidates]
        total += -log_softmax_row(row)[i]
    expected = total / B
    got = hard_negative_loss(torch.tensor(q), torch.tensor(p), torch.tensor(n), temperature=t).item()
    assert math.isclose(got, expected, rel_tol=1e-5)


def test_false_negative_filtering_matches_loop():
    rng = np.random.default_rng(2)
    q, p, n = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    pos_text = ["x", "y", "z"]
    neg_text = ["y", "w", "x"]  # example 0's negative is example 1's positive, etc.
    n[0], n[2] = p[1], p[0]  # same text, same embedding
    cand_text = pos_text + neg_text
    mask = false_negative_mask(pos_text, cand_text)
    t = 0.1
    total = 0.0
    for i in range(3):
        row = [
            cosine(q[i], c) / t
            for j, c in enumerate(list(p) + list(n))
            if not (j != i and cand_text[j] == pos_text[i])
        ]
        keep_index = [j for j in range(6) if not (j != i and cand_text[j] == pos_text[i])]
        total += -log_softmax_row(row)[keep_index.index(i)]
    expected = total / 3
    got = hard_negative_loss(
        torch.tensor(q), torch.tensor(p), torch.tensor(n), temperature=t, false_negatives=mask
    ).item()
    assert mask.sum().item() == 2  # query 1 drops candidate 3 ('y'), query 0 drops candidate 5 ('x')
    assert math.isclose(got, expected, rel_tol=1e-5)
    unfiltered = hard_negative_loss(torch.tensor(q), torch.tensor(p), torch.tensor(n), temperature=t).item()
    assert abs(unfiltered - expected) > 1e-4


def simcse_by_loop(a, b, t):
    total = 0.0
    for i in range(len(a)):
        row = [cosine(a[i], b[j]) / t for j in range(len(b))]
        total += -log_softmax_row(row)[i]
    return total / len(a)


def test_matryoshka_loss_is_the_sum_over_normalized_prefixes():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 12)), rng.normal(size=(6, 12))
    dims, weights, t = [12, 8, 3], [1.0, 0.5, 2.0], 0.05
    # by hand: SimCSE on each prefix (cosine normalizes the prefix itself), weighted and summed
    expected = sum(w * simcse_by_loop(a[:, :d], b[:, :d], t) for d, w in zip(dims, weights))
    fn = lambda x, y: simcse_loss(x, y, temperature=t)
    got = matryoshka_loss(fn, (torch.tensor(a), torch.tensor(b)), dims, weights).item()
    assert math.isclose(got, expected, rel_tol=1e-5)
    unweighted = sum(simcse_by_loop(a[:, :d], b[:, :d], t) for d in dims)
    assert math.isclose(
        matryoshka_loss(fn, (torch.tensor(a), torch.tensor(b)), dims).item(), unweighted, rel_tol=1e-5
    )
    # no dimensions: the plain loss on the full vectors
    assert math.isclose(
        matryoshka_loss(fn, (torch.tensor(a), torch.tensor(b)), []).item(),
        simcse_by_loop(a, b, t),
        rel_tol=1e-5,
    )


def test_matryoshka_gradient_reaches_only_through_prefixes():
    a = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 10, dtype=torch.float64)
    matryoshka_loss(lambda x, y: simcse_loss(x, y, 0.05), (a, b), [4, 2]).backward()
    assert a.grad[:, 4:].abs().max() == 0 and a.grad[:, :4].abs().max() > 0


def test_similarities_stay_fp32_under_bf16_autocast():
    from decoder2vec.training.losses import info_nce, similarity_kl

    g = torch.Generator().manual_seed(0)
    q, c = torch.randn(8, 64, generator=g), torch.randn(16, 64, generator=g)
    exact = info_nce(q, c, 0.02)
    kl = similarity_kl(q, c[:8])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(info_nce(q, c, 0.02), exact, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(similarity_kl(q, c[:8]), kl, rtol=1e-6, atol=1e-6)
