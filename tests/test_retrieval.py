"""BinaryIndex against brute force in numpy: Hamming ranking, rescoring, and recall on clustered data."""

import numpy as np
import pytest

from decoder2vec.retrieval import BinaryIndex


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 64))
    docs = centres[rng.integers(0, 50, 2000)] + 0.6 * rng.normal(size=(2000, 64))
    queries = docs[:100] + 0.3 * rng.normal(size=(100, 64))
    norm = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return norm(docs), norm(queries)


def hamming(a_bits, b_bits):
    return np.unpackbits(a_bits[:, None, :] ^ b_bits[None, :, :], axis=-1).sum(-1)


def test_hamming_ranking_equals_brute_force(data):
    docs, queries = data
    index = BinaryIndex(docs, rescore=None)
    scores, ids = index.search(queries, k=5)
    distances = hamming(np.packbits(queries > 0, axis=1), np.packbits(docs > 0, axis=1))
    np.testing.assert_array_equal(-scores, np.sort(distances, axis=1)[:, :5])
    np.testing.assert_array_equal(np.take_along_axis(distances, ids, 1), -scores)


def test_float_rescoring_reorders_the_hamming_candidates_exactly(data):
    docs, queries = data
    index = BinaryIndex(docs, rescore="float32")
    scores, ids = index.search(queries, k=10, rescore_multiplier=4)
    np.testing.assert_allclose(scores, np.einsum("nd,nkd->nk", queries, docs[ids]), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    # every returned document was among the 40 nearest by Hamming distance
    distances = hamming(np.packbits(queries > 0, axis=1), np.packbits(docs > 0, axis=1))
    cutoff = np.sort(distances, axis=1)[:, 39:40]
    assert (np.take_along_axis(distances, ids, 1) <= cutoff).all()


@pytest.mark.parametrize("rescore", ["int8", "float32"])
def test_rescored_recall_is_close_to_float_search(data, rescore):
    docs, queries = data
    exact = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    _, ids = BinaryIndex(docs, rescore=rescore).search(queries, k=10, rescore_multiplier=8)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
    _, plain = BinaryIndex(docs, rescore=None).search(queries, k=10)
    plain_recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(plain, exact)])
    assert recall >= 0.9 and recall > plain_recall


def test_sizes_and_bad_input(data):
    docs, _ = data
    index = BinaryIndex(docs[:, :60])  # a width that is not a multiple of 8
    assert len(index) == 2000 and index.nbytes == {"binary": 2000 * 8, "rescore": 2000 * 60}
    with pytest.raises(ValueError, match=r"queries must be \(n, 60\)"):
        index.search(docs[:2])
    with pytest.raises(ValueError, match="rescore must be one of"):
        BinaryIndex(docs, rescore="int4")
    with pytest.raises(ValueError, match="non-empty"):
        BinaryIndex(np.zeros((0, 8)))


def test_int8_rescoring_of_constant_dimensions_is_exact(data):
    """A one-document index has only constant dimensions: each stands for its single value, so the
    document scores exactly its own float score against itself (it scored 0.658 when a constant dimension
    dequantized to min + 0.5). With five documents and a few constant dimensions, each int8 score is
    within half a bucket per dimension of the float score (checked against numpy's dot product)."""
    docs, _ = data
    one = docs[:1]
    scores, ids = BinaryIndex(one, rescore="int8").search(one, k=1)
    assert ids[0, 0] == 0 and scores[0, 0] == pytest.approx(float(one[0] @ one[0]), abs=1e-6)
    five = docs[:5].copy()
    five[:, :8] = 0.25  # eight constant dimensions
    scores, ids = BinaryIndex(five, rescore="int8").search(five, k=5)
    exact = np.take_along_axis(five @ five.T, ids, 1)
    step = (five.max(0) - five.min(0)) / 255
    bound = (np.abs(five) @ (step / 2)) + 1e-5  # |q . (d - centre)| <= sum |q_j| * step_j / 2
    assert (np.abs(scores - exact) <= bound[:, None]).all(), np.abs(scores - exact).max()
    assert scores[:, 0] == pytest.approx(np.diag(five @ five.T), abs=0.02)


@pytest.mark.parametrize("where", ["embeddings", "queries"])
def test_non_finite_vectors_are_refused_naming_the_row(data, where):
    from decoder2vec.errors import InputError

    docs, queries = data
    bad = (docs if where == "embeddings" else queries)[:10].copy()
    bad[7, 3] = np.nan
    bad[9, 0] = np.inf
    with pytest.raises(InputError, match=f"{where} row 7 holds NaN or infinite values"):
        if where == "embeddings":
            BinaryIndex(bad)
        else:
            BinaryIndex(docs).search(bad)


@pytest.mark.parametrize(
    ("damage", "message"), [("nan", "dimension 2 has a non-finite range"), ("invert", "dimension 2 has min")]
)
def test_bad_int8_ranges_are_refused(data, damage, message):
    from decoder2vec.errors import InputError

    docs, _ = data
    ranges = np.vstack([docs.min(0), docs.max(0)])
    if damage == "nan":
        ranges[:, 2] = np.nan
    else:
        ranges[:, 2] = ranges[::-1, 2]
    with pytest.raises(InputError, match=f"BinaryIndex ranges: {message}"):
        BinaryIndex(docs, ranges=ranges)
