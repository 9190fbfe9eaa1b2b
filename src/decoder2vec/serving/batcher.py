"""Dynamic batching: merge the sequences of concurrent requests into length-sorted forwards.

Requests queue their sequences with a future. One worker takes everything waiting (a *round*), sorts it
longest first, splits it into forwards with :func:`plan_round` (least padding plus per-forward cost,
under a padded-token budget), runs each forward in a single background thread (the event loop stays
free) and scatters the rows back to each request's future as soon as that forward ends. Rounds are
taken in arrival order, so nothing starves.
Capacity is counted in texts accepted and not yet answered; past it ``submit`` refuses at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from decoder2vec.encoding.encoder import MAX_ATTENTION_CELLS
from decoder2vec.encoding.tokenization import Sequence
from decoder2vec.serving.metrics import ServerMetrics

logger = logging.getLogger("decoder2vec.serving")
EmbedFn = Callable[[list[Sequence]], torch.Tensor]


def plan_round(
    sorted_lengths: np.ndarray,
    max_texts: int,
    max_tokens: int,
    overhead_tokens: float,
    max_attention: int | None = MAX_ATTENTION_CELLS,
) -> list[tuple[int, int]]:
    """Split length-sorted (longest first) sequences into ``[start, stop)`` forwards of least cost.

    A forward of ``n`` sequences whose longest has ``L`` tokens costs ``overhead_tokens + n * L``
    (padded tokens, plus what starting one more forward costs). A round is a random mix of lengths:
    one forward for all of it pads every short text to the longest (measured: 1.5x the time of
    globally sorted batches on STS-B sentences), one forward per text pays the overhead each time.
    ``f[i]``, the least cost of sequences ``i..``, is ``overhead + min_j (j - i) * L[i] + f[j]`` over the
    forwards ``[i, j)`` that fit ``max_texts``, ``max_tokens`` and ``max_attention`` attention cells (size
    times the longest length squared, the bound ``Encoder.encode`` keeps: long documents never stack into
    one forward whatever the token budget); a single text always fits.
    """
    n = len(sorted_lengths)
    best = np.zeros(n + 1)  # best[i]: least cost of sequences i..n-1
    stop = np.zeros(n, dtype=np.int64)  # where the first forward of that plan ends
    for i in range(n - 1, -1, -1):
        longest = int(sorted_lengths[i])
        fits = min(max_texts, max(1, max_tokens // longest), n - i)
        if max_attention is not None:
            fits = min(fits, max(1, max_attention // longest**2))
        costs = best[i + 1 : i + fits + 1] + np.arange(1, fits + 1) * longest
        k = int(np.argmin(costs))
        best[i], stop[i] = overhead_tokens + costs[k], i + k + 1
    plan, start = [], 0
    while start < n:
        plan.append((start, int(stop[start])))
        start = int(stop[start])
    return plan


class QueueFullError(Exception):
    """The batcher holds ``max_queue`` texts already."""


class ShuttingDownError(Exception):
    """The batcher is draining and takes no new work."""


@dataclass(eq=False)
class _Job:
    sequences: list[Sequence]
    future: asyncio.Future
    rows: torch.Tensor | None = None
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.remaining = len(self.sequences)


class DynamicBatcher:
    """Batches sequences from many requests; ``embed`` (sequences -> float32 rows) runs in a thread."""

    def __init__(
        self,
        embed: EmbedFn,
        *,
        max_batch_tokens: int,
        max_queue: int,
        forward_overhead_tokens: float,
        max_batch_texts: int = 1024,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._embed = embed
        self.max_batch_tokens = max_batch_tokens
        self.forward_overhead_tokens = forward_overhead_tokens
        self.max_queue = max_queue
        self.max_batch_texts = max_batch_texts
        self.metrics = metrics
        self.depth = 0  # texts accepted and not yet answered
        # Jobs not yet taken into a round, in arrival order; a job whose client leaves is dropped
        # from here at once, so abandoned work never outgrows ``max_queue``.
        self._waiting: dict[_Job, None] = {}
        self._wakeup = asyncio.Event()
        self._closing = False
        # One thread: forwards never overlap (they would only compete for the same cores).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decoder2vec-forward")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="decoder2vec-batcher")

    async def stop(self) -> None:
        """Finish every accepted request, then stop the worker and its thread."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    def submit(self, sequences: list[Sequence]) -> asyncio.Future:
        """Queue ``sequences``; the future resolves to their rows (n, dim), in order.

        Cancel the future to drop the not-yet-run sequences (a client that left).
        """
        if self._closing:
            raise ShuttingDownError("the server is shutting down")
        if self.depth + len(sequences) > self.max_queue:
            raise QueueFullError(f"the queue holds {self.depth} of {self.max_queue} texts")
        job = _Job(list(sequences), asyncio.get_running_loop().create_future())
        self._set_depth(self.depth + len(sequences))
        job.future.add_done_callback(lambda _: self._release(job))
        self._waiting[job] = None
        self._wakeup.set()
        return job.future

    def _release(self, job: _Job) -> None:
        """The job is answered, failed or cancelled: its texts no longer count against the queue."""
        self._set_depth(self.depth - len(job.sequences))
        if job in self._waiting:  # cancelled before its round: drop it now
            del self._waiting[job]
            self._count_skipped(len(job.sequences))

    def _set_depth(self, depth: int) -> None:
        self.depth = depth
        if self.metrics is not None:
            self.metrics.queue_depth.set(depth)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._waiting:
                jobs, self._waiting = list(self._waiting), {}
                try:
                    await self._run_round(jobs)
                # A bug in a round must fail that round's requests, not hang every later one.
                except Exception as exc:
                    logger.exception("batching round failed")
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(RuntimeError(f"the batching round failed: {exc}"))
                self._wakeup.set()  # jobs that arrived during the round
            elif self._closing:
                return

    async def _run_round(self, jobs: list[_Job]) -> None:
        self._count_skipped(sum(len(job.sequences) for job in jobs if job.future.done()))
        items = [(job, i) for job in jobs if not job.future.done() for i in range(len(job.sequences))]
        lengths = np.array([len(job.sequences[i].ids) for job, i in items], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        loop = asyncio.get_running_loop()
        plan = plan_round(
            lengths[order], self.max_batch_texts, self.max_batch_tokens, self.forward_overhead_tokens
        )
        for start, stop in plan:
            chunk = [items[k] for k in order[start:stop]]
            live = [(job, i) for job, i in chunk if not job.future.done()]
            self._count_skipped(len(chunk) - len(live))
            if not live:
                continue
            sequences = [job.sequences[i] for job, i in live]
            try:
                rows = await loop.run_in_executor(self._executor, self._embed, sequences)
            except Exception as exc:  # a failed forward fails its requests, never the worker
                logger.exception("embedding forward failed")
                for job in {job for job, _ in live}:
                    if not job.future.done():
                        job.future.set_exception(RuntimeError(f"the model forward failed: {exc}"))
                continue
            if rows.shape[0] != len(sequences):  # zip would leave some requests waiting forever
                raise RuntimeError(f"the forward of {len(sequences)} sequences gave {rows.shape[0]} rows")
            if self.metrics is not None:
                self.metrics.observe_batch(len(sequences), sum(len(s.ids) for s in sequences))
            self._scatter(live, rows)

    def _count_skipped(self, n: int) -> None:
        if n and self.metrics is not None:
            self.metrics.skipped_texts.inc(n)

    @staticmethod
    def _scatter(live: list[tuple[_Job, int]], rows: torch.Tensor) -> None:
        for (job, i), row in zip(live, rows):
            if job.future.done():
                continue  # cancelled while its forward ran
            if job.rows is None:
                job.rows = torch.empty(len(job.sequences), rows.shape[1], dtype=torch.float32)
            job.rows[i] = row
            job.remaining -= 1
            if job.remaining == 0:
                job.future.set_result(job.rows)
