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
