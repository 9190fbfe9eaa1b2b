"""Binary search with rescoring: 32x smaller indexes that keep most of float recall.

Documents are indexed by their sign bits (``precision="ubinary"``: one bit a dimension) in a faiss
``IndexBinaryFlat``, which ranks by Hamming distance with popcount instructions. A query's top
``k * rescore_multiplier`` candidates are then rescored against a second copy of the documents, kept in
int8 (4x smaller than float; dequantized to the centre of each bucket) or float32, with the float query:
the approach of sentence-transformers' ``semantic_search_faiss(..., rescore=True)`` and of the
"binary + scalar quantization" retrieval recipe, here as one small class.

Needs the ``search`` extra (``pip install 'decoder2vec[search]'``: faiss-cpu).
"""

from __future__ import annotations

import numpy as np

from decoder2vec.encoding.compact import calibration_ranges, check_ranges, dequantize, quantize
from decoder2vec.errors import InputError

RESCORE = ("int8", "float32", None)


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "binary search needs faiss: pip install 'decoder2vec[search]' (or faiss-cpu)"
        ) from exc
    return faiss


def _check_finite(rows: np.ndarray, name: str) -> None:
    """NaN and infinity have no sign bit to index and make every rescored score NaN: name the first row."""
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if bad.size:
        raise InputError(
            f"{name} row {int(bad[0])} holds NaN or infinite values ({bad.size} such row(s)); "
            "only finite vectors can be indexed and searched",
            param=name,
        )


class BinaryIndex:
    """Hamming search over packed sign bits, then rescoring of the candidates (see the module doc).

    ``embeddings`` are the documents' float vectors (as ``encode`` returns them, any width; normalize
    them for cosine). ``rescore`` keeps int8 or float32 copies for the second pass, or None to rank by
    Hamming distance alone. ``ranges`` (2, dim) are the int8 ranges; default: the documents' own min/max.
    """

    def __init__(
        self, embeddings: np.ndarray, *, rescore: str | None = "int8", ranges: np.ndarray | None = None
    ) -> None:
        if rescore not in RESCORE:
            raise ValueError(f"rescore must be one of {RESCORE}, got {rescore!r}")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) == 0:
            raise ValueError(f"embeddings must be a non-empty (n, dim) array, got shape {embeddings.shape}")
        _check_finite(embeddings, "embeddings")
        faiss = _faiss()
        self.dim = embeddings.shape[1]
        bits = quantize(embeddings, "ubinary")
        # faiss packs codes in whole bytes: a width that is not a multiple of 8 is padded with zero bits,
        # which are equal for every vector and so do not change any distance.
        self.index = faiss.IndexBinaryFlat(bits.shape[1] * 8)
        self.index.add(bits)
        self.rescore = rescore
        self.ranges = None
        self.store = None
        if rescore == "int8":
            self.ranges = (
                calibration_ranges(embeddings, None, False)
                if ranges is None
                else check_ranges(ranges, self.dim, "BinaryIndex ranges")
            )
            self.store = quantize(embeddings, "int8", self.ranges)
        elif rescore == "float32":
            self.store = embeddings.copy()

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def nbytes(self) -> dict[str, int]:
        """Bytes of the binary index (searched; kept in memory) and of the rescoring copy (may live on disk)."""
        return {
            "binary": len(self) * self.index.code_size,
            "rescore": 0 if self.store is None else self.store.nbytes,
        }

    def search(
        self, queries: np.ndarray, k: int = 10, *, rescore_multiplier: int = 4
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, indices)``, each (n_queries, k), best first. Scores are dot products with the float
        query after rescoring, or minus the Hamming distance without it."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}), got shape {queries.shape}")
        _check_finite(queries, "queries")
        if k < 1 or rescore_multiplier < 1:
            raise ValueError("k and rescore_multiplier must be positive")
        k = min(k, len(self))
        fetch = k if self.rescore is None else min(len(self), k * rescore_multiplier)
        distances, candidates = self.index.search(quantize(queries, "ubinary"), fetch)
        if self.rescore is None:
            return -distances.astype(np.float32), candidates
        docs = self.store[candidates]  # (n, fetch, dim)
        if self.rescore == "int8":
            docs = dequantize(docs, self.ranges)
        scores = np.einsum("nd,nfd->nf", queries, docs)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(candidates, order, 1)
