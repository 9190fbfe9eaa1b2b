"""The Ray Data engine: encoder actors (one per GPU, or per CPU slot) embed, the driver writes shards.

The pending shards' rows go into a Ray dataset (one block per shard, texts and global row numbers);
``map_batches`` runs :class:`EncoderActor`, which loads the encoder once. The driver iterates the
results, gathers each shard's rows and writes the shard atomically, then its finish record, with the
same writer as the local engine as soon as it is complete. So only the driver touches ``--out`` (no
shared file system needed for the output), and a shard is recorded as finished only once all its rows
are in it: killing the job at any point loses only unfinished shards, which a re-run redoes. For
int8/uint8 output without an encoder calibration sample, a first small pass embeds the corpus sample
(raw float32) and the driver records its ranges before any shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from decoder2vec.corpus.compact import Calibration
from decoder2vec.corpus.inputs import Corpus
from decoder2vec.corpus.progress import ShardProgress
from decoder2vec.corpus.shards import write_shard
from decoder2vec.errors import Decoder2VecError

# Rows per actor call, in units of --batch-size: enough for Encoder.encode to sort by length
# (less padding), small enough that work spreads over the actors even with few shards.
CALL_BATCHES = 8


def import_ray():
    """``ray`` with Ray Data, or an error that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise Decoder2VecError(
            "--engine ray needs Ray Data: pip install 'decoder2vec[scale]' (or use --engine local)"
        ) from None
    return ray


class EncoderActor:
    """A Ray Data map worker: loads the encoder once, then embeds batches of ``{"row", "text"}``."""

    def __init__(
        self,
        model: str,
        encoder_kwargs: dict[str, Any],
        expected: dict[str, Any],
        encode_kwargs: dict[str, Any],
        threads: int,
    ):
        import torch

        from decoder2vec.backbone.model_io import quiet_transformers
        from decoder2vec.corpus.model_info import check_encoder
        from decoder2vec.encoding.encoder import Encoder

        # Each actor owns `threads` CPUs; torch would otherwise start one thread per core of the node.
        torch.set_num_threads(threads)
        quiet_transformers()
        self.encoder = Encoder.from_pretrained(model, **encoder_kwargs)
        check_encoder(self.encoder, expected)  # a worker that loads another model must not write rows
        self.encode_kwargs = encode_kwargs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        embeddings = self.encoder.encode(texts, show_progress_bar=False, **self.encode_kwargs)
        return {"row": np.asarray(batch["row"], dtype=np.int64), "embedding": embeddings}


def run_ray(
    corpus: Corpus,
    plan: list[range],
    pending: list[int],
    out: Path,
    *,
    model: str,
    encoder_kwargs: dict[str, Any],
    expected: dict[str, Any],
    instruction: str | None,
    normalize: bool,
    batch_size: int,
    num_workers: int,
    gpus_per_worker: float,
    threads_per_worker: int,
    ray_address: str | None,
    progress: ShardProgress,
    compact: dict[str, Any] | None = None,
    calibration: Calibration | None = None,
) -> None:
    """Embed the pending shards with ``num_workers`` encoder actors on Ray (started here if needed).

    ``compact`` holds the ``dimensions``/``precision``/``ranges`` keywords of ``Encoder.encode``; with
    ``calibration``, the int8/uint8 ranges are first computed on its rows and recorded.
    """
    ray = import_ray()
    import pyarrow as pa

    started_here = not ray.is_initialized()
    if started_here:
        # address=None starts a local Ray; "auto" or "ray://host:10001" joins a running cluster.
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ctx = ray.data.DataContext.get_current()
    bars = ctx.enable_progress_bars
    ctx.enable_progress_bars = False  # ours counts texts and shards
    compact = dict(compact or {})
    common = {"instruction": instruction, "batch_size": batch_size, "normalize": normalize}

    def embedded(rows: list[range], encode_kwargs: dict[str, Any]):
        tables = [
            pa.table(
                {
                    "row": pa.array(span, type=pa.int64()),
                    "text": pa.array([corpus.texts[k] for k in span], type=pa.string()),
                }
            )
            for span in rows
        ]
        dataset = ray.data.from_arrow(tables).map_batches(
            EncoderActor,
            fn_constructor_kwargs={
                "model": model,
                "encoder_kwargs": encoder_kwargs,
                "expected": expected,
                "encode_kwargs": encode_kwargs,
                "threads": threads_per_worker,
            },
            batch_size=min(len(plan[0]), CALL_BATCHES * batch_size),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=num_workers),
            num_cpus=threads_per_worker,
            num_gpus=gpus_per_worker or None,
        )
        return dataset.iter_batches(batch_size=None, batch_format="numpy")

    try:
        if calibration is not None:  # raw pooled embeddings of the sample, as Encoder.calibrate keeps them
            sample: dict[int, np.ndarray] = {}
            raw_kwargs = {"instruction": instruction, "batch_size": batch_size}
            for batch in embedded([calibration.rows], raw_kwargs):
                sample.update(zip(batch["row"].tolist(), batch["embedding"]))
            compact["ranges"] = calibration.ranges(np.stack([sample[k] for k in calibration.rows]))
        gather = ShardGatherer(corpus, plan, pending, out, progress)
        for batch in embedded([plan[k] for k in pending], {**common, **compact}):
            gather.add(batch["row"], batch["embedding"])
        gather.check_done()
    finally:
        ctx.enable_progress_bars = bars
        if started_here:
            ray.shutdown()


class ShardGatherer:
    """Collects embedded rows in any order and writes each shard once all its rows have arrived."""

    def __init__(
        self, corpus: Corpus, plan: list[range], pending: list[int], out: Path, progress: ShardProgress
    ):
        self.corpus, self.plan, self.out, self.progress = corpus, plan, out, progress
        self.shard_size = len(plan[0])
        self.buffers: dict[int, np.ndarray] = {}
        self.filled: dict[int, np.ndarray] = {}
        self.left = set(pending)

    def add(self, rows: np.ndarray, embeddings: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        embeddings = np.asarray(embeddings)  # float32, or int8/uint8 for compact precisions
        for index in np.unique(rows // self.shard_size):
            index = int(index)
            if index not in self.left:
                raise RuntimeError(
                    f"Ray returned rows of shard {index}, which was not pending or is already written"
                )
            span = self.plan[index]
            mask = rows // self.shard_size == index
            if index not in self.buffers:
                self.buffers[index] = np.empty((len(span), embeddings.shape[1]), dtype=embeddings.dtype)
                self.filled[index] = np.zeros(len(span), dtype=bool)
            local = rows[mask] - span.start
            self.buffers[index][local] = embeddings[mask]
            self.filled[index][local] = True
            if self.filled[index].all():
                write_shard(self.out, index, self.corpus.ids[span.start : span.stop], self.buffers.pop(index))
                del self.filled[index]
                self.left.discard(index)
                self.progress.shard_done(len(span))

    def check_done(self) -> None:
        if self.left:
            raise RuntimeError(
                f"Ray finished without returning every row; shards not written: {sorted(self.left)}"
            )
