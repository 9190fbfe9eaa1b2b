"""Training losses: MNTP cross-entropy with the next-token shift, and InfoNCE for (Sim)CSE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from decoder2vec.training.masking import IGNORE_INDEX


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Targets aligned with the outputs: the output at position ``i`` predicts the label at ``i + 1``.

    Returns (B, L) with the last column ``IGNORE_INDEX`` (nothing follows the last output).
    """
    shifted = torch.full_like(labels, IGNORE_INDEX)
    shifted[:, :-1] = labels[:, 1:]
    return shifted


def info_nce(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float,
    false_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE on cosine similarity: query ``i``'s positive is ``candidates[i]``; all others are negatives.

    queries (B, D); candidates (C, D) with C >= B (in-batch positives first, then any hard negatives).
    ``false_negatives`` (B, C) bool marks candidates to drop from query ``i``'s softmax.
    """
    q = F.normalize(queries.float(), dim=-1)
    c = F.normalize(candidates.float(), dim=-1)
    scores = q @ c.T / temperature
    if false_negatives is not None:
        scores = scores.masked_fill(false_negatives.to(scores.device), float("-inf"))
    target = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(scores, target)


def simcse_loss(view_a: torch.Tensor, view_b: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Unsupervised SimCSE: two dropout views of the same sentences; other sentences are the negatives."""
    return info_nce(view_a, view_b, temperature)


def hard_negative_loss(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float = 0.02,
    false_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Supervised contrastive loss: each query against all positives and all hard negatives in the batch.

    negatives: (N, D) flattened (any count, shared by every query) or None.
    """
    candidates = (
        positives if negatives is None or negatives.numel() == 0 else torch.cat([positives, negatives])
    )
    return info_nce(queries, candidates, temperature, false_negatives)


def false_negative_mask(positive_keys: Sequence[str], candidate_keys: Sequence[str]) -> torch.Tensor:
    """(B, C) bool: candidate ``j`` (not query ``i``'s own positive) has the same text as ``i``'s positive.

    Such a candidate is not a negative for ``i`` at all, so it is removed from ``i``'s softmax.
    """
    mask = torch.zeros(len(positive_keys), len(candidate_keys), dtype=torch.bool)
    for i, key in enumerate(positive_keys):
        for j, other in enumerate(candidate_keys):
            if j != i and other == key:
                mask[i, j] = True
    return mask
