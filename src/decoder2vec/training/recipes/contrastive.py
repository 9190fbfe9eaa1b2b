"""What the two contrastive recipes (unsupervised SimCSE, supervised hard negatives) share.

A :class:`ContrastiveRecipe` owns its step, torchtune-style: ``setup`` loads the data and wraps the
encoder's own pooled module (backbone -> pooling, with a fresh LoRA in the backbone); ``make_batch``
returns a :class:`ContrastiveBatch` that carries its own bookkeeping; ``step`` embeds the whole batch in
one forward (both dropout views, or queries + positives + negatives), so DDP sees one forward per backward,
and backpropagates the subclass's ``loss``. With ``mini_batch_size`` the batch is embedded by GradCache in
micro-batches with an identical gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from decoder2vec.encoder_config import default_max_length, model_context
from decoder2vec.encoding.model import embed
from decoder2vec.encoding.tokenization import TokenizedBatch
from decoder2vec.training.distributed import world
from decoder2vec.training.gradcache import grad_cache_step, split_batch
from decoder2vec.training.loop import Stage
from decoder2vec.training.losses import matryoshka_loss
from decoder2vec.training.modules import add_lora, set_attention_dropout
from decoder2vec.training.recipes.common import (
    Recipe,
    load_for_training,
    save_adapter,
    tokens_in,
)
from decoder2vec.training.settings import ContrastiveConfig


@dataclass
class ContrastiveBatch:
    """One step's texts as a single padded batch, split into ``sizes`` consecutive parts, plus the keys
    the supervised loss filters false negatives with."""

    tokens: TokenizedBatch
    sizes: list[int]
    positive_keys: list[str] = field(default_factory=list)
    negative_keys: list[str] = field(default_factory=list)


class ContrastiveRecipe(Recipe):
    """Base of the contrastive recipes; subclasses implement ``load_data``, ``make_batch`` and ``loss``."""

    name = "contrastive"
    attention_dropout: float | None = None  # None keeps the model's own
    cfg: ContrastiveConfig

    # ------------------------------------------------------------------ setup
    def load_data(self, world_size: int):
        """Read the data and return the batch plan (before the model loads, so bad data fails fast)."""
        raise NotImplementedError

    def setup(self, accelerator) -> None:
        from decoder2vec.encoding.encoder import Encoder

        self.acc = accelerator
        self.rank, self.world_size = accelerator.process_index, accelerator.num_processes
        self.plan = self.load_data(self.world_size)
        base, tokenizer = load_for_training(self.cfg, accelerator, with_lm_head=False)
        self.original_dropout = float(getattr(base.config, "attention_dropout", 0.0) or 0.0)
        if self.attention_dropout is not None:
            set_attention_dropout(base, self.attention_dropout)
        self.peft_model = add_lora(base, self.cfg.lora, seed=self.cfg.seed)
        # The encoder being trained: its pooled module is what the loop optimises, its tokenization plan
        # (built once) is what every batch goes through.
        # (max_seq_length is a cap: a recipe's 512 on a model with a shorter context uses the context)
        context = model_context(base.config)
        max_length = min(self.cfg.max_seq_length, context) if context else self.cfg.max_seq_length
        # The trained Matryoshka dimensions travel with the encoder (saved config, config.json for vLLM);
        # a dimension wider than the model fails here, before the first step.
        self.encoder = Encoder(
            self.peft_model,
            tokenizer,
            pooling=self.cfg.pooling,
            max_length=max_length,
            matryoshka_dimensions=self.cfg.matryoshka_dims or None,
        )
        self.encoder.module.to(accelerator.device)

    # ------------------------------------------------------------------ one step
    def make_batch(self, indices: list[int]) -> ContrastiveBatch:
        raise NotImplementedError

    def loss(self, reps: torch.Tensor, batch: ContrastiveBatch) -> torch.Tensor:
        """This process's (N, D) embeddings -> the loss over the *global* batch, times the world size:
        DDP averages gradients over processes, and each process only backpropagates into its own rows,
        so the sum of the per-process gradients is the full-batch one."""
        raise NotImplementedError

    def nested_loss(self, loss_fn, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``loss_fn`` on ``parts``, or with ``matryoshka_dims`` the weighted sum over their nested prefixes."""
        return matryoshka_loss(loss_fn, parts, self.cfg.matryoshka_dims, self.cfg.matryoshka_weights or None)

    def step(self, model, batch: ContrastiveBatch, acc) -> dict[str, float]:
        run = lambda mb: embed(model, mb, acc.device)
        loss_fn = lambda reps: self.loss(reps, batch)
        mini = self.cfg.mini_batch_size
        with acc.autocast():
            if mini is None or mini >= batch.tokens.input_ids.shape[0]:
                loss = loss_fn(run(batch.tokens))
                acc.backward(loss)
            else:
                loss = grad_cache_step(
                    run,
                    [split_batch(batch.tokens, mini)],
                    loss_fn,
                    backward=acc.backward,
                    no_sync=lambda: acc.no_sync(model),
                )
        out = {"loss": float(loss.detach()) / world()[1], "tokens": tokens_in(batch.tokens.attention_mask)}
        chance = self.chance_loss(batch)
        if chance is not None:
            out["chance_loss"] = chance
        return out

    def chance_loss(self, batch: ContrastiveBatch) -> float | None:
        """The loss of this batch if every text had the same embedding: every candidate equally similar, a
        uniform softmax, ln(candidates) per query (summed over the Matryoshka terms, false negatives left
        out). The loop warns when the loss climbs back to it: the embeddings have collapsed."""
        rows = batch.tokens.input_ids.shape[0]
        with torch.no_grad():  # (every process calls it, so the loss's all-gather stays matched)
            same = torch.ones(rows, self.encoder.embedding_dim, device=self.acc.device)
            return float(self.loss(same, batch)) / world()[1]

    # ------------------------------------------------------------------ run and save
    def retrieval_encoder(self):
        return self.encoder  # its module is the one the loop trains

    def stage(self) -> Stage:
        return Stage(self.name, self.encoder.module, self.plan, self.make_batch, self.step)

    def save(self, out_dir: Path) -> tuple[Path, Path | None]:
        """Write ``adapter/`` and, with ``cfg.merge``, a ready ``encoder/`` (merged weights, via ``Encoder.save``)."""
        adapter = save_adapter(self.peft_model, out_dir / "adapter")
        if not self.cfg.merge:
            return adapter, None
        merged = self.peft_model.merge_and_unload()  # in place: the encoder's backbone is now merged
        # dropout is a training setting, not the encoder's
        set_attention_dropout(merged, self.original_dropout)
        merged.eval()
        # the saved encoder embeds whole texts, not the training truncation
        self.encoder.max_length = max(self.encoder.max_length, default_max_length(merged.config))
        return adapter, self.encoder.save(out_dir / "encoder", overwrite=True)
