"""Training losses: MNTP cross-entropy with the next-token shift, InfoNCE for (Sim)CSE, distillation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def full_precision(like: torch.Tensor):
    """Similarities in fp32 even inside a bf16 autocast region (autocast would run the matmul in bf16
    whatever its inputs): at τ = 0.02 bf16's 8-bit mantissa puts about ±0.15 of noise on each logit."""
    return torch.autocast(device_type=like.device.type, enabled=False)


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
    with full_precision(q):
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


def matryoshka_loss(
    loss_fn: Callable[..., torch.Tensor],
    embeddings: Sequence[torch.Tensor],
    dims: Sequence[int] | None,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Matryoshka Representation Learning: ``loss_fn`` taken on each nested prefix ``[..., :d]`` of every
    embedding tensor and summed (``weights`` default to 1, as in sentence-transformers' MatryoshkaLoss).

    ``loss_fn`` must normalise what it compares (InfoNCE on cosine does), so each prefix is trained as the
    truncated-then-normalised vector that ``encode(dimensions=d)`` returns. ``dims`` None or empty: the
    plain loss on the full vectors.
    """
    if not dims:
        return loss_fn(*embeddings)
    weights = [1.0] * len(dims) if weights is None else list(weights)
    if len(weights) != len(dims):
        raise ValueError(f"{len(weights)} weights for {len(dims)} Matryoshka dimensions")
    total = None
    for dim, weight in zip(dims, weights):
        term = weight * loss_fn(*(e[..., :dim] for e in embeddings))
        total = term if total is None else total + term
    return total


def similarity_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """KL(teacher || student) of every text's similarity distribution over the *other* texts of the batch
    (softmax of cosine / ``temperature``; a text's similarity to itself is always 1, so it is left out),
    averaged over the texts. ``student`` (B, Ds) and ``teacher`` (B, Dt) may differ in width."""
    n = student.shape[0]
    if n < 2:  # no other texts: nothing to compare
        return student.sum() * 0.0
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float().to(s.device), dim=-1)
    others = ~torch.eye(n, dtype=torch.bool, device=s.device)
    with full_precision(s):
        log_s = F.log_softmax((s @ s.T)[others].view(n, n - 1) / temperature, dim=-1)
        log_t = F.log_softmax((t @ t.T)[others].view(n, n - 1) / temperature, dim=-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")


def distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    kind: str = "cosine",
    embedding_weight: float = 1.0,
    similarity_weight: float = 1.0,
    temperature: float = 0.05,
) -> torch.Tensor:
    """Distillation: ``embedding_weight`` x the distance of each student embedding to its teacher embedding
    (``cosine``: mean of 1 - cosine; ``mse``: mean squared error over all values) plus ``similarity_weight``
    x :func:`similarity_kl` of the batch. ``student`` and ``teacher`` are (B, D) rows of the same texts."""
    s, t = student.float(), teacher.float().to(student.device)
    total = s.new_zeros(())
    if embedding_weight:
        if kind == "cosine":
            term = (1 - F.cosine_similarity(s, t, dim=-1)).mean()
        elif kind == "mse":
            term = F.mse_loss(s, t)
        else:
            raise ValueError(f"unknown distillation loss {kind!r}; choose cosine or mse")
        total = total + embedding_weight * term
    if similarity_weight:
        total = total + similarity_weight * similarity_kl(s, t, temperature)
    return total
