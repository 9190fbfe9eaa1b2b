"""Checks on what a caller passes to an encoder: the texts and the integer options.

Shared by :class:`~decoder2vec.Encoder`, :class:`~decoder2vec.encoding.static.StaticEncoder` and the
chunker (:mod:`decoder2vec.encoding.chunking`), so none of them imports another for its argument checks.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from decoder2vec.io import check_unicode


def check_texts(texts: list) -> None:
    """Reject what cannot be embedded, naming the offending index."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        if not text.strip():
            raise ValueError(f"texts[{i}] is empty or whitespace-only; there is nothing to embed")
        check_unicode(text, f"texts[{i}]")


def as_text_list(texts) -> tuple[list, bool]:
    """``(items, single)``. Unordered or keyed collections are refused: a set has no row order, and a
    dict would silently embed its keys."""
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, dict | set | frozenset) or not isinstance(texts, Iterable):
        raise TypeError(
            f"texts must be a string or an ordered sequence of strings (list, tuple, generator), "
            f"not {type(texts).__name__}"
        )
    return list(texts), False


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)
