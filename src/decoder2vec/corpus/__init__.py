"""Resumable corpus embedding into Parquet shards, locally or on Ray (``decoder2vec embed-corpus``)."""

from decoder2vec.corpus.pipeline import CorpusResult, embed_corpus_files
from decoder2vec.corpus.shards import read_shards

__all__ = ["CorpusResult", "embed_corpus_files", "read_shards"]
