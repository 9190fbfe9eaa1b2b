"""Stage 3a of LLM2Vec: unsupervised SimCSE. Each sentence is embedded twice with dropout active; the two
views are positives, the other sentences of the (global) batch are negatives."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from decoder2vec.encoding.tokenization import tokenize_batch
from decoder2vec.training.config import SimCSEConfig, check_stage
from decoder2vec.training.data.collate import concat_batches
from decoder2vec.training.data.corpus import read_sentences
from decoder2vec.training.data.sampling import BatchPlan, shard
from decoder2vec.training.distributed import gather_with_grad
from decoder2vec.training.loop import make_accelerator
from decoder2vec.training.losses import simcse_loss
from decoder2vec.training.recipes.common import StageResult
from decoder2vec.training.recipes.contrastive import build_embedder, train_contrastive


def run_simcse(
    cfg: SimCSEConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Callable[[int], None]] = (),
) -> StageResult:
    """Train SimCSE on top of ``cfg.model`` + ``cfg.adapters`` (the MNTP adapter); writes ``adapter/``
    (and ``encoder/`` with ``cfg.merge``) under ``out_dir``."""
    check_stage(cfg, "simcse")  # settings first: nothing is loaded or written for an impossible run
    out_dir = Path(out_dir)
    acc = make_accelerator(cfg)
    rank, world_size = acc.process_index, acc.num_processes
    sentences = read_sentences(cfg.data, cfg.text_field, cfg.min_words)
    plan = BatchPlan.single(len(sentences), cfg.batch_size * world_size, cfg.seed)
    built = build_embedder(cfg, acc, cfg.attention_dropout)
    tokenizer = built.tokenizer

    def make_batch(indices: list[int]):
        one = tokenize_batch(
            tokenizer, [sentences[i] for i in shard(indices, rank, world_size)], max_length=cfg.max_seq_length
        )
        return concat_batches([one, one], tokenizer.pad_token_id)  # the two dropout views, one forward

    def loss_fn(reps: torch.Tensor) -> torch.Tensor:
        a, b = reps.chunk(2)
        return simcse_loss(gather_with_grad(a), gather_with_grad(b), cfg.temperature) * world_size

    return train_contrastive(
        "simcse", cfg, out_dir, acc, built, plan, make_batch, loss_fn,
        resume=resume, overwrite=overwrite, callbacks=callbacks,
    )
