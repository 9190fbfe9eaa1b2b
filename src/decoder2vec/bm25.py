"""Okapi BM25 over a fixed list of texts (bm25s): the one lexical ranker of the package.

``decoder2vec eval retrieval --bm25`` (:func:`decoder2vec.evaluation.retrieval.bm25_run`, the baseline
row) and the pairs engine's round-trip filter and negative miner
(:class:`decoder2vec.pairs.scoring.BM25Scorer`) both index and score with :class:`BM25`, so the two
cannot drift apart. Settings (:data:`BM25_SETTINGS`): bm25s's defaults and its README's English
tokenization: lower-cased words of 2+ word characters (the scikit-learn CountVectorizer pattern), English
stopwords removed, no stemming (no extra dependency). A text with no such word has length 0, as in Lucene.

Needs ``bm25s`` (``pip install 'decoder2vec[search]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decoder2vec.errors import ConfigError

__all__ = ["BM25", "BM25_SETTINGS", "bm25_tokenize"]

BM25_SETTINGS: dict[str, Any] = {"method": "lucene", "k1": 1.5, "b": 0.75, "stopwords": "en", "stemmer": None}


def _bm25s():
    try:
        import bm25s
    except ImportError:
        # a missing extra is a setup step, reported as one line by the CLI
        raise ConfigError("BM25 needs bm25s: pip install 'decoder2vec[search]' (or bm25s)") from None
    return bm25s


def bm25_tokenize(texts: Sequence[str], *, return_ids: bool = True):
    """bm25s's tokenizer with :data:`BM25_SETTINGS` (lower-case, 2+ word characters, stopwords): a
    ``Tokenized`` (ids and vocabulary), or each text's words with ``return_ids=False``."""
    return _bm25s().tokenize(
        list(texts), stopwords=BM25_SETTINGS["stopwords"], return_ids=return_ids, show_progress=False
    )


class BM25:
    """The BM25 index of ``texts``: :meth:`query_ids` tokenizes queries against its vocabulary,
    :meth:`scores` gives one query's score for every text (float32, in ``texts`` order)."""

    def __init__(
        self,
        texts: Sequence[str],
        *,
        k1: float = BM25_SETTINGS["k1"],
        b: float = BM25_SETTINGS["b"],
        method: str = BM25_SETTINGS["method"],
        show_progress: bool = False,
    ) -> None:
        bm25s = _bm25s()
        self.size = len(texts)
        self.retriever = bm25s.BM25(k1=k1, b=b, method=method)
        self.retriever.index(bm25_tokenize(texts), show_progress=show_progress)

    def query_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each query's words as index ids, in order (repeats kept). Words no text uses score nothing and
        are left out, so a query may have none."""
        vocab = self.retriever.vocab_dict
        return [[vocab[w] for w in words if w in vocab] for words in bm25_tokenize(texts, return_ids=False)]

    def scores(self, ids: list[int]) -> np.ndarray:
        """``(size,)`` scores of one query (its :meth:`query_ids` row); all zero for a query of no ids."""
        return self.retriever.get_scores_from_ids(ids)
