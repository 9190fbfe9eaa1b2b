"""Retrieval training data: (query, passage, hard negatives) from a corpus (``decoder2vec pairs``)."""

from decoder2vec.pairs.pipeline import PairsSettings, build_pairs

__all__ = ["PairsSettings", "build_pairs"]
