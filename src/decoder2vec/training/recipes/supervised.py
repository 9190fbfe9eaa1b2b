"""Stage 3b of LLM2Vec: supervised contrastive learning with hard negatives (E5-style data).

Batches come from one task at a time; the instruction is prepended to the query (to both sides for
symmetric tasks) and excluded from pooling. Each query is scored against every positive and every hard
negative of the global batch; optionally, candidates whose text equals the query's positive are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from decoder2vec.encoding.tokenization import tokenize_batch
from decoder2vec.training.config import SupervisedConfig, check_stage
from decoder2vec.training.data.collate import concat_batches
from decoder2vec.training.data.pairs import collate_pairs, read_pairs, task_groups
from decoder2vec.training.data.sampling import BatchPlan, shard
from decoder2vec.training.distributed import gather_objects, gather_with_grad
from decoder2vec.training.errors import CorpusError
from decoder2vec.training.loop import make_accelerator
from decoder2vec.training.losses import false_negative_mask, hard_negative_loss
from decoder2vec.training.recipes.common import StageResult
from decoder2vec.training.recipes.contrastive import build_embedder, train_contrastive


class SupervisedBatch:
    """One step's texts tokenized into a single batch, plus the bookkeeping ``loss_fn`` needs."""

    def __init__(self, tokenizer, examples, max_length: int) -> None:
        texts = collate_pairs(examples)
        parts = [
            tokenize_batch(
                tokenizer, texts.queries, instruction=texts.query_instructions, max_length=max_length
            ),
            tokenize_batch(
                tokenizer, texts.positives, instruction=texts.doc_instructions, max_length=max_length
            ),
        ]
        if texts.negatives:
            parts.append(
                tokenize_batch(
                    tokenizer, texts.negatives, instruction=texts.negative_instructions, max_length=max_length
                )
            )
        self.sizes = [p.input_ids.shape[0] for p in parts] + ([] if texts.negatives else [0])
        self.batch = concat_batches(parts, tokenizer.pad_token_id)
        self.positive_keys = texts.positives
        self.candidate_keys = texts.positives + texts.negatives


def run_supervised(
    cfg: SupervisedConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Callable[[int], None]] = (),
) -> StageResult:
    """Train the supervised contrastive stage; writes ``adapter/`` (and ``encoder/`` with ``cfg.merge``)."""
    check_stage(cfg, "supervised")
    if not cfg.data:
        raise CorpusError(
            "the supervised stage needs data: a JSONL file of {query, positive, negatives, instruction, task}"
        )
    out_dir = Path(out_dir)
    acc = make_accelerator(cfg)
    rank, world_size = acc.process_index, acc.num_processes
    examples = read_pairs(cfg.data, cfg.num_negatives, tuple(cfg.symmetric_tasks))
    plan = BatchPlan(task_groups(examples), cfg.batch_size * world_size, cfg.seed)
    built = build_embedder(cfg, acc)
    tokenizer = built.tokenizer
    current: dict[str, SupervisedBatch] = {}

    def make_batch(indices: list[int]):
        current["batch"] = SupervisedBatch(
            tokenizer, [examples[i] for i in shard(indices, rank, world_size)], cfg.max_seq_length
        )
        return current["batch"].batch

    def loss_fn(reps: torch.Tensor) -> torch.Tensor:
        info = current["batch"]
        q, p, n = reps.split(info.sizes)
        mask = None
        if cfg.filter_false_negatives:
            pos_keys = gather_objects(info.positive_keys)
            neg_keys = gather_objects(info.candidate_keys[len(info.positive_keys) :])
            mask = false_negative_mask(pos_keys, pos_keys + neg_keys)
        loss = hard_negative_loss(
            gather_with_grad(q), gather_with_grad(p), gather_with_grad(n), cfg.temperature, mask
        )
        return loss * world_size

    return train_contrastive(
        "supervised", cfg, out_dir, acc, built, plan, make_batch, loss_fn,
        resume=resume, overwrite=overwrite, callbacks=callbacks,
    )
