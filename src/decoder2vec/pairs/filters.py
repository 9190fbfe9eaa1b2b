"""Keep or drop generated queries, every drop counted by reason.

Quality (per query, in this order): ``unparsable`` (nothing left after parsing), ``too_short`` /
``too_long`` (words), ``not_question`` (question template: no final "?"), ``not_statement`` (claim
template: ends with "?"), ``copies_passage`` (shares a run of ``copy_words`` consecutive words with its
passage: a copied span teaches lexical matching, not retrieval), ``duplicate`` (same normalized text as
an earlier query of the same template anywhere in the corpus). Then ``round_trip`` (Promptagator's
consistency filter): the scorer must rank the query's own passage in its top ``k`` among all passages.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from decoder2vec.pairs.generate import parse_query

_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def longest_common_run(query: str, passage: str) -> int:
    """Longest run of consecutive (normalized) words of ``query`` that occurs in ``passage``."""
    q, p = normalize(query).split(), f" {normalize(passage)} "
    best = 0
    for i in range(len(q)):
        j = i + best + 1  # only longer runs matter
        while j <= len(q) and f" {' '.join(q[i:j])} " in p:
            best, j = j - i, j + 1
    return best


def quality_reason(
    query: str, passage: str, template: str, *, min_words: int, max_words: int, copy_words: int
) -> str | None:
    """Why ``query`` (already parsed) is dropped, or None to keep it."""
    if not query:
        return "unparsable"
    words = len(query.split())
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    if template == "question" and not query.endswith("?"):
        return "not_question"
    if template == "claim" and query.endswith("?"):
        return "not_statement"
    if longest_common_run(query, passage) >= copy_words:
        return "copies_passage"
    return None


def filter_generated(
    records: list[dict], passages, *, min_words: int, max_words: int, copy_words: int, drops: Counter
) -> list[dict]:
    """``records`` ``{"passage", "template", "raw"}`` in generation order -> the kept ones with their
    parsed ``query``; ``drops`` counts the rest by reason."""
    kept, seen = [], set()
    for rec in records:
        query = parse_query(rec["raw"])
        reason = quality_reason(
            query,
            passages[rec["passage"]].text,
            rec["template"],
            min_words=min_words,
            max_words=max_words,
            copy_words=copy_words,
        )
        key = (rec["template"], normalize(query))
        if reason is None and key in seen:
            reason = "duplicate"
        if reason is not None:
            drops[reason] += 1
            continue
        seen.add(key)
        kept.append({**rec, "query": query})
    return kept


def round_trip_keep(scorer, queries, anchors: np.ndarray, top_k: int) -> np.ndarray:
    """Boolean mask: the anchor passage is among the scorer's top ``top_k`` for its query."""
    if len(anchors) == 0:
        return np.zeros(0, dtype=bool)
    _, ids = scorer.search(queries, top_k)
    return (ids == np.asarray(anchors)[:, None]).any(axis=1)
