"""Query -> passage scores for the round-trip filter and the negative miner: a dense encoder or BM25.

Both answer ``search(queries, k)`` (the top ``k`` passages, best first: faiss ``IndexFlatIP`` over
unit vectors, or ``bm25s``) and ``score(queries, passages)`` (each query against one given passage).
Queries carry the task instruction on the dense side (as in training), passages none.
"""

from __future__ import annotations

import numpy as np

from decoder2vec.bm25 import BM25
from decoder2vec.errors import ConfigError


class DenseScorer:
    """Cosine similarity with an encoder (any alias or folder), top-k by faiss."""

    def __init__(self, model: str, passages: list[str], *, batch_size: int = 32, encoder=None) -> None:
        try:
            import faiss
        except ImportError as exc:
            raise ConfigError("a dense scorer needs faiss: pip install 'decoder2vec[search]'") from exc
        if encoder is None:
            from decoder2vec.encoding.encoder import load_encoder

            encoder = load_encoder(model)
        self.encoder = encoder
        self.batch_size = batch_size
        self.passages = self._encode(passages, None)

        self.index = faiss.IndexFlatIP(self.passages.shape[1])
        self.index.add(self.passages)

    def _encode(self, texts: list[str], instructions: list[str] | None) -> np.ndarray:
        out = self.encoder.encode(
            texts,
            instruction=instructions,
            normalize=True,
            batch_size=self.batch_size,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def queries(self, texts: list[str], instructions: list[str]) -> np.ndarray:
        return self._encode(texts, instructions)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(q, min(k, self.index.ntotal))

    def score(self, q: np.ndarray, passages: np.ndarray) -> np.ndarray:
        return np.einsum("nd,nd->n", q, self.passages[passages])


class BM25Scorer:
    """Okapi BM25 (:class:`decoder2vec.bm25.BM25`: bm25s defaults, k1 1.5, b 0.75, English stopwords
    removed), as ``eval retrieval --bm25`` ranks."""

    def __init__(self, passages: list[str]) -> None:
        self.index = BM25(passages)
        self.n = len(passages)

    def queries(self, texts: list[str], instructions: list[str]) -> list[list[int]]:
        # Words the passages never use score nothing and are left out.
        return self.index.query_ids(texts)

    def all_scores(self, q: list[list[int]]) -> np.ndarray:
        """(n_queries, n_passages) scores; the brute-force view the search is tested against."""
        return np.stack([self._scores(ids) for ids in q]) if q else np.zeros((0, self.n), np.float32)

    def _scores(self, ids: list[int]) -> np.ndarray:
        return np.asarray(self.index.scores(ids), dtype=np.float32)

    def search(self, q: list[list[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.n)
        scores, ids = np.zeros((len(q), k), np.float32), np.zeros((len(q), k), np.int64)
        for row, tokens in enumerate(q):
            s = self._scores(tokens)
            top = np.argsort(-s, kind="stable")[:k]  # ties in passage order, as a numpy ranking would
            scores[row], ids[row] = s[top], top
        return scores, ids

    def score(self, q: list[list[int]], passages: np.ndarray) -> np.ndarray:
        return np.array([self._scores(t)[p] for t, p in zip(q, passages)], dtype=np.float32)


def load_scorer(name: str, passages: list[str], *, batch_size: int = 32):
    """``bm25`` or an encoder (alias or folder)."""
    if name == "bm25":
        return BM25Scorer(passages)
    return DenseScorer(name, passages, batch_size=batch_size)
