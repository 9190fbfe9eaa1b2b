"""The round planner against brute force, and the batcher's forwards following it."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
import torch

from decoder2vec.encoding.encoder import MAX_ATTENTION_CELLS, plan_batches
from decoder2vec.encoding.tokenization import Sequence
from decoder2vec.serving.batcher import DynamicBatcher, plan_round


def cost(plan, lengths, overhead):
    return sum(overhead + (stop - start) * lengths[start] for start, stop in plan)


def fits(plan, lengths, max_texts, max_tokens, max_attention=None):
    return all(
        stop - start == 1
        or (
            stop - start <= max_texts
            and (stop - start) * lengths[start] <= max_tokens
            and (max_attention is None or (stop - start) * lengths[start] ** 2 <= max_attention)
        )
        for start, stop in plan
    )


def all_plans(n):
    """Every split of ``range(n)`` into contiguous ``[start, stop)`` pieces."""
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0] + [i + 1 for i, cut in enumerate(cuts) if cut] + [n]
        yield list(itertools.pairwise(bounds))


@pytest.mark.parametrize("seed", range(40))
def test_plan_round_is_the_cheapest_split(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 10))
    lengths = np.sort(rng.integers(1, 40, n))[::-1]
    max_texts, max_tokens = int(rng.integers(1, 6)), int(rng.integers(20, 120))
    overhead = float(rng.choice([0, 5, 16, 100]))
    max_attention = [None, 2000][seed % 2]
    plan = plan_round(lengths, max_texts, max_tokens, overhead, max_attention)
    # Covers every sequence once, in order, within the limits.
    assert plan[0][0] == 0 and plan[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))
    assert fits(plan, lengths, max_texts, max_tokens, max_attention)
    feasible = [p for p in all_plans(n) if fits(p, lengths, max_texts, max_tokens, max_attention)]
    assert cost(plan, lengths, overhead) == pytest.approx(min(cost(p, lengths, overhead) for p in feasible))


def test_plan_round_extremes():
    lengths = np.array([30, 12, 11, 10, 4, 3, 3, 2])
    # Free forwards: no padding at all, so equal lengths may share one and nothing else does.
    assert cost(plan_round(lengths, 64, 1024, 0), lengths, 0) == lengths.sum()
    # Costly forwards: as few as the limits allow, which is what greedy filling gives.
    assert len(plan_round(lengths, 3, 1024, 1e9)) == len(plan_batches(lengths, 3, 1024)) == 3
    # The measured CPU figure splits the long text from the short ones.
    assert plan_round(lengths, 64, 1024, 16) == [(0, 1), (1, 4), (4, 8)]
    # An over-long text still goes, alone.
    assert plan_round(np.array([500, 400]), 64, 100, 16) == [(0, 1), (1, 2)]


def test_plan_round_keeps_the_encoders_attention_bound():
    # A GPU's token budget (16,384) would take two 8k documents in one forward; the attention bound that
    # Encoder.encode keeps (one 8k sequence's cells) splits them, as plan_batches does, while short texts
    # still share forwards.
    long = np.array([8192, 8192])
    assert plan_round(long, 64, 16384, 16, None) == [(0, 2)]
    assert (
        plan_round(long, 64, 16384, 0)
        == [(0, 1), (1, 2)]
        == plan_batches(long, 64, 16384, MAX_ATTENTION_CELLS)
    )
    assert plan_round(np.array([64] * 8), 64, 16384, 16) == [(0, 8)]


def test_batcher_runs_the_planned_forwards_and_returns_each_request_its_rows():
    forwards: list[list[int]] = []

    def embed(sequences: list[Sequence]) -> torch.Tensor:
        forwards.append([len(s.ids) for s in sequences])
        # A row that identifies its sequence: (first id, length).
        return torch.tensor([[s.ids[0], len(s.ids)] for s in sequences], dtype=torch.float32)

    requests = [
        [Sequence([100 * r + k] * length, 0, False) for k, length in enumerate(lengths)]
        for r, lengths in enumerate([[30, 3], [12], [2, 11, 4], [10, 3]])
    ]

    async def run():
        batcher = DynamicBatcher(embed, max_batch_tokens=1024, max_queue=64, forward_overhead_tokens=16)
        futures = [batcher.submit(sequences) for sequences in requests]  # one round: the worker is not up
        batcher.start()
        rows = await asyncio.gather(*futures)
        await batcher.stop()
        return rows

    rows = asyncio.run(run())
    for sequences, got in zip(requests, rows):
        assert got.tolist() == [[s.ids[0], len(s.ids)] for s in sequences]
    assert forwards == [[30], [12, 11, 10], [4, 3, 3, 2]]  # plan_round's split, not one padded forward


def test_a_request_cancelled_while_waiting_is_dropped_at_once():
    """Clients that leave while a long forward runs must not pile up beyond ``max_queue``."""
    import threading

    release = threading.Event()
    seen: list[int] = []

    def embed(sequences: list[Sequence]) -> torch.Tensor:
        release.wait(timeout=30)
        seen.extend(s.ids[0] for s in sequences)
        return torch.zeros(len(sequences), 2)

    async def run():
        batcher = DynamicBatcher(embed, max_batch_tokens=1024, max_queue=4, forward_overhead_tokens=16)
        batcher.start()
        first = batcher.submit([Sequence([1, 1], 0, False)])
        await asyncio.sleep(0.05)  # its forward is now running (and blocked)
        for k in range(1000):
            batcher.submit([Sequence([1000 + k] * 3, 0, False)] * 3).cancel()
            await asyncio.sleep(0)  # let the done-callback run
        waiting, depth = len(batcher._waiting), batcher.depth
        last = batcher.submit([Sequence([7, 7], 0, False)])
        release.set()
        await asyncio.gather(first, last)
        await batcher.stop()
        return waiting, depth

    waiting, depth = asyncio.run(run())
    assert (waiting, depth) == (0, 1)  # only the running request still counts
    assert seen == [1, 7]  # no cancelled text reached a forward


def test_a_broken_round_fails_its_requests_and_the_batcher_goes_on():
    calls = []

    def embed(sequences: list[Sequence]) -> torch.Tensor:
        calls.append(len(sequences))
        n = len(sequences) - 1 if len(calls) == 1 else len(sequences)  # first forward: a row short
        return torch.zeros(n, 2)

    async def run():
        batcher = DynamicBatcher(embed, max_batch_tokens=1024, max_queue=64, forward_overhead_tokens=16)
        broken = batcher.submit([Sequence([1, 2], 0, False), Sequence([3, 4], 0, False)])
        batcher.start()
        with pytest.raises(RuntimeError, match="2 sequences gave 1 rows"):
            await asyncio.wait_for(broken, timeout=30)  # the bug this guards against hangs forever
        rows = await batcher.submit([Sequence([5, 6], 0, False)])
        await batcher.stop()
        return rows

    assert asyncio.run(run()).shape == (1, 2)
