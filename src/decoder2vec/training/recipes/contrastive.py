"""Shared machinery of the two contrastive stages (unsupervised SimCSE and supervised hard negatives).

Every step embeds *one* concatenated batch holding all the texts of the step (both dropout views, or
queries + positives + negatives), so DDP sees one forward per backward; ``loss_fn`` slices it. With
``mini_batch_size`` the batch is embedded by GradCache in micro-batches with an identical gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from decoder2vec.encoding.tokenization import TokenizedBatch
from decoder2vec.training.config import ContrastiveConfig
from decoder2vec.training.distributed import world
from decoder2vec.training.gradcache import grad_cache_step, split_batch
from decoder2vec.training.loop import Stage, train
from decoder2vec.training.modules import Embedder, add_lora, embed, set_attention_dropout
from decoder2vec.training.recipes.common import (
    StageResult,
    identity,
    load_for_training,
    save_adapter,
    tokens_in,
)


class BuiltEmbedder(NamedTuple):
    embedder: Embedder
    peft_model: torch.nn.Module
    tokenizer: object
    original_dropout: float  # restored on the saved encoder: dropout is a training setting


def build_embedder(cfg: ContrastiveConfig, accelerator, attention_dropout: float | None = None) -> BuiltEmbedder:
    """The pooled LoRA model, its tokenizer and the model's own attention dropout, for a contrastive stage."""
    base, tokenizer = load_for_training(cfg, accelerator, with_lm_head=False)
    original = float(getattr(base.config, "attention_dropout", 0.0) or 0.0)
    if attention_dropout is not None:
        set_attention_dropout(base, attention_dropout)
    peft_model = add_lora(base, cfg.lora, seed=cfg.seed)
    return BuiltEmbedder(Embedder(peft_model, cfg.pooling).to(accelerator.device), peft_model, tokenizer, original)


def contrastive_step(
    mini_batch_size: int | None,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
) -> Callable:
    """A loop ``step``: embed the batch (directly or via GradCache), backpropagate ``loss_fn``.

    ``loss_fn`` receives this process's (N, D) embeddings and returns the loss over the *global* batch,
    already multiplied by the world size: DDP averages gradients over processes, and each process only
    backpropagates into its own rows, so the sum of the per-process gradients is the full-batch one.
    """

    def step(model, batch: TokenizedBatch, acc) -> dict[str, float]:
        run = lambda mb: embed(model, mb, acc.device)
        with acc.autocast():
            if mini_batch_size is None or mini_batch_size >= batch.input_ids.shape[0]:
                loss = loss_fn(run(batch))
                acc.backward(loss)
            else:
                loss = grad_cache_step(
                    run,
                    [split_batch(batch, mini_batch_size)],
                    loss_fn,
                    backward=acc.backward,
                    no_sync=lambda: acc.no_sync(model),
                )
        return {"loss": float(loss.detach()) / world()[1], "tokens": tokens_in(batch.attention_mask)}

    return step


def save_contrastive_outputs(
    out_dir: Path, peft_model, tokenizer, cfg: ContrastiveConfig, original_dropout: float, merge: bool
) -> tuple[Path, Path | None]:
    """Write ``adapter/`` and, with ``merge``, a ready ``encoder/`` (merged weights, via ``Encoder.save``)."""
    from decoder2vec.encoding.encoder import Encoder

    adapter = save_adapter(peft_model, out_dir / "adapter")
    if not merge:
        return adapter, None
    merged = peft_model.merge_and_unload()
    set_attention_dropout(merged, original_dropout)  # dropout is a training setting, not the encoder's
    merged.eval()
    encoder = Encoder(merged, tokenizer, pooling=cfg.pooling)
    return adapter, encoder.save(out_dir / "encoder", overwrite=True)


def train_contrastive(
    name: str,
    cfg: ContrastiveConfig,
    out_dir: Path,
    acc,
    built: BuiltEmbedder,
    plan,
    make_batch: Callable,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    resume: bool,
    overwrite: bool,
    callbacks: Sequence[Callable[[int], None]],
) -> StageResult:
    """Run a contrastive stage on ``built`` and write its adapter (and merged encoder with ``cfg.merge``)."""
    stage = Stage(name, built.embedder, plan, make_batch, contrastive_step(cfg.mini_batch_size, loss_fn))
    identity_record = identity(name, cfg, acc.num_processes)
    metrics = train(stage, cfg, out_dir, identity_record, acc, resume=resume, overwrite=overwrite, callbacks=callbacks)
    result = StageResult(out_dir, out_dir / "adapter", metrics=metrics)
    if acc.is_main_process:
        result.adapter, result.merged = save_contrastive_outputs(
            out_dir, built.peft_model, built.tokenizer, cfg, built.original_dropout, cfg.merge
        )
    acc.wait_for_everyone()
    return result
