"""Cross-process helpers for in-batch negatives under DDP (no-ops in a single process)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) from all ranks along dim 0, in rank order.

    ``all_gather`` returns tensors without autograd history; the local tensor is put back in its own
    slot so gradients flow to this rank's embeddings (the others' get theirs on their own rank).
    """
    rank, size = world()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    parts[rank] = x
    return torch.cat(parts)


def gather_objects(items: list) -> list:
    """Concatenate picklable per-rank lists (e.g. text keys for false-negative filtering) in rank order."""
    _rank, size = world()
    if size == 1:
        return list(items)
    out: list = [None] * size
    dist.all_gather_object(out, list(items))
    return [x for part in out for x in part]


def end_distributed() -> None:
    """Tear down the process group at the end of a successful run (a no-op in a single process).

    Left to interpreter exit, gloo's threads can abort a finished torchrun worker with "terminate called
    without an active exception" (SIGABRT), so the job fails after its work is written."""
    if dist.is_available() and dist.is_initialized():
        import gc

        gc.collect()  # free finished work objects (DDP's, the gathers') while the interpreter is whole
        dist.destroy_process_group()
        gc.collect()
