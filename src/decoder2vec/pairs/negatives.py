"""Hard negatives, positive-aware (NV-Retriever; sentence-transformers' ``mine_hard_negatives``).

For each pair, the scorer's top candidates for the query are taken in order, leaving out every passage
of the pair's own document (never a false negative from the positive's document) and of documents not
in ``allowed`` (the dev split, so train negatives never leak dev passages); the first ``skip`` are
skipped (the likeliest unlabelled positives), then any candidate scoring ``>= margin x`` the query's
score with its anchor passage is dropped (probably also relevant), and the first ``n`` remain.
"""

from __future__ import annotations

import numpy as np

# Candidates fetched per query: enough for skip + n after the document and margin filters in practice.
DEPTH_FACTOR, DEPTH_EXTRA = 4, 32


def mine_negatives(
    scorer,
    queries,
    anchors: np.ndarray,
    anchor_docs: np.ndarray,
    passage_docs: np.ndarray,
    allowed_docs: np.ndarray,
    *,
    n: int,
    skip: int,
    margin: float,
) -> list[list[int]]:
    """Per pair, up to ``n`` negative passage indices, best-scoring first (see the module doc)."""
    if len(anchors) == 0:
        return []
    positive = scorer.score(queries, np.asarray(anchors))
    scores, ids = scorer.search(queries, skip + DEPTH_FACTOR * n + DEPTH_EXTRA)
    out = []
    for row in range(len(anchors)):
        candidates = [
            (s, i)
            for s, i in zip(scores[row], ids[row])
            if i >= 0 and passage_docs[i] != anchor_docs[row] and allowed_docs[passage_docs[i]]
        ][skip:]
        out.append([int(i) for s, i in candidates if s < margin * positive[row]][:n])
    return out
