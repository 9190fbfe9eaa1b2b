"""Gradient caching (Gao et al., 2021) for contrastive losses with large batches.

The loss couples every example through in-batch negatives, so a batch cannot simply be split into
micro-batches. GradCache computes the same gradient in three steps:

1. embed every micro-batch without autograd (cheap in memory), remembering the RNG state before each;
2. compute the full-batch loss on those embeddings as leaves, and its gradient ``g`` w.r.t. each embedding;
3. re-embed each micro-batch with autograd, *replaying* the saved RNG state so dropout draws the same
   masks, and backpropagate the surrogate ``sum(embedding * g)``, whose parameter gradient is exactly the
   full-batch one by the chain rule.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch


class RandState:
    """Snapshot of the torch CPU (and current CUDA device) RNG, restorable to replay dropout exactly."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = (
            torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        )

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda)


def grad_cache_step(
    embed: Callable[[Any], torch.Tensor],
    sides: Sequence[Sequence[Any]],
    loss_fn: Callable[..., torch.Tensor],
    *,
    backward: Callable[[torch.Tensor], None] | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> torch.Tensor:
    """Backpropagate ``loss_fn(*side_embeddings)`` through ``embed`` one micro-batch at a time.

    sides: for each loss input (e.g. queries, positives, negatives) the list of its micro-batches; the
        side's embedding is ``torch.cat([embed(mb) for mb in side])``.
    backward: how to backpropagate a scalar (``accelerator.backward`` under mixed precision / DDP).
    no_sync: context manager factory that suspends DDP gradient all-reduce (all but the last backward).
    Returns the (detached) loss.
    """
    backward = backward or (lambda t: t.backward())
    states: list[list[RandState]] = []
    offsets: list[list[int]] = []  # row where each micro-batch starts in its side's embedding
    cached: list[torch.Tensor] = []
    with torch.no_grad():
        for side in sides:
            states.append([])
            offsets.append([])
            reps, row = [], 0
            for mb in side:
                states[-1].append(RandState())
                offsets[-1].append(row)
                reps.append(embed(mb))
                row += reps[-1].shape[0]
            cached.append(torch.cat(reps))

    leaves = [r.detach().requires_grad_() for r in cached]
    loss = loss_fn(*leaves)
    grads = torch.autograd.grad(loss, leaves)

    end_state = RandState()
    jobs = [(s, k) for s, side in enumerate(sides) for k in range(len(side))]
    for n, (s, k) in enumerate(jobs):
        # DDP decides in forward whether the following backward all-reduces, so both run in the context
        ctx = no_sync() if (no_sync is not None and n < len(jobs) - 1) else contextlib.nullcontext()
        with ctx:
            states[s][k].restore()
            rep = embed(sides[s][k])
            g = grads[s][offsets[s][k] : offsets[s][k] + rep.shape[0]]
            backward((rep * g.to(rep.dtype)).sum())
    end_state.restore()  # leave the RNG where an ordinary (non-replayed) step would have left it
    return loss.detach()


def split_batch(batch: Any, size: int | None) -> list[Any]:
    """Split a batch (tensor, dict of tensors, or dataclass of tensors) into micro-batches of ``size`` rows."""
    n = _batch_len(batch)
    if size is None or size >= n:
        return [batch]
    return [_slice(batch, i, min(i + size, n)) for i in range(0, n, size)]


def _slice(batch: Any, a: int, b: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[a:b]
    if isinstance(batch, dict):
        return {k: v[a:b] for k, v in batch.items()}
    import dataclasses

    return dataclasses.replace(
        batch, **{f.name: getattr(batch, f.name)[a:b] for f in dataclasses.fields(batch)}
    )


def _batch_len(mb: Any) -> int:
    """Number of examples in a micro-batch (a tensor, a dict/dataclass of tensors)."""
    if isinstance(mb, torch.Tensor):
        return mb.shape[0]
    if isinstance(mb, dict):
        return next(iter(mb.values())).shape[0]
    return mb.input_ids.shape[0]
