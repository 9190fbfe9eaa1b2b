"""The evaluation loaders' error; it lives in :mod:`decoder2vec.errors` with the rest of the hierarchy."""

from decoder2vec.errors import DataFormatError

__all__ = ["DataFormatError"]
