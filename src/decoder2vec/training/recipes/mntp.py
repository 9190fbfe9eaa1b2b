"""Stage 2 of LLM2Vec: masked next token prediction (MNTP) with LoRA on a bidirectional decoder."""

from __future__ import annotations

from pathlib import Path

import torch

from decoder2vec.backbone.cache import replace_folder
from decoder2vec.training.data.chunking import chunk_blocks, tokenize_documents, train_eval_split
from decoder2vec.training.data.corpus import read_texts
from decoder2vec.training.data.sampling import BatchPlan, shard
from decoder2vec.training.loop import Stage
from decoder2vec.training.masking import (
    DEFAULT_PROBABILITY,
    mask_tokens,
    maskable_positions,
    resolve_mask_token,
)
from decoder2vec.training.modules import MNTPModel, add_lora
from decoder2vec.training.recipes.common import (
    Recipe,
    load_for_training,
    save_adapter,
)
from decoder2vec.training.settings import MNTPConfig


class Masker:
    """Turns (N, L) token blocks into MNTP inputs: masked ids, unshifted labels, positions."""

    def __init__(self, tokenizer, cfg: MNTPConfig, mask_token_id: int, vocab_size: int | None = None) -> None:
        self.special = set(tokenizer.all_special_ids)
        self.mask_token_id = mask_token_id
        # random replacements must be valid rows of the embedding matrix *and* real tokens
        self.vocab_size = min(len(tokenizer), vocab_size or len(tokenizer))
        self.strategy = cfg.mask_strategy
        self.probability = (  # an explicit 0 is kept, so the masking function rejects it by name
            cfg.mask_probability
            if cfg.mask_probability is not None
            else DEFAULT_PROBABILITY.get(cfg.mask_strategy, 0.2)
        )

    def __call__(
        self, blocks: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        attention = torch.ones_like(blocks)  # blocks are full: no padding
        maskable = maskable_positions(blocks, attention, self.special)
        ids, labels = mask_tokens(
            blocks,
            maskable,
            mask_token_id=self.mask_token_id,
            vocab_size=self.vocab_size,
            probability=self.probability,
            strategy=self.strategy,
            generator=generator,
        )
        positions = torch.arange(blocks.shape[1]).expand_as(blocks)
        return {"input_ids": ids, "attention_mask": attention, "position_ids": positions, "labels": labels}


def evaluate_mntp(
    model, blocks: torch.Tensor, masker: Masker, batch_size: int, seed: int, device
) -> dict[str, float]:
    """Held-out loss and masked-token accuracy, with a fixed masking seed so evaluations are comparable."""
    gen = torch.Generator().manual_seed(seed)
    loss_sum, correct, count = 0.0, 0, 0
    for start in range(0, blocks.shape[0], batch_size):
        batch = {k: v.to(device) for k, v in masker(blocks[start : start + batch_size], gen).items()}
        out = model(**batch)
        n = int(out["count"])
        loss_sum += float(out["loss"].detach()) * n
        correct += int(out["correct"])
        count += n
    if count == 0:  # a held-out split too small to mask anything: no loss to report, not a loss of 0
        return {"masked_tokens": 0}
    return {"loss": loss_sum / count, "accuracy": correct / count, "masked_tokens": count}


class MNTPRecipe(Recipe):
    """MNTP as one object, torchtune-style: ``setup`` (data first, then the model with a fresh LoRA),
    ``make_batch``, ``step``, ``evaluate``; the generic loop owns checkpoints and exact resume."""

    name = "mntp"
    cfg: MNTPConfig

    def setup(self, acc) -> None:
        cfg = self.cfg
        self.acc, self.rank, self.world_size = acc, acc.process_index, acc.num_processes
        # Data first: bad input fails before the model is loaded or anything is written.
        texts = read_texts(cfg.data, cfg.text_field)
        lm, tokenizer = load_for_training(cfg, acc, with_lm_head=True)
        mask_id, added = resolve_mask_token(tokenizer, cfg.mask_token)
        if added:
            lm.resize_token_embeddings(len(tokenizer))
        blocks = chunk_blocks(tokenize_documents(tokenizer, texts), cfg.max_seq_length)
        self.train_blocks, self.eval_blocks = train_eval_split(blocks, cfg.eval_fraction, cfg.seed)
        self.plan = BatchPlan.single(self.train_blocks.shape[0], cfg.batch_size * self.world_size, cfg.seed)
        self.masker = Masker(tokenizer, cfg, mask_id, lm.get_input_embeddings().weight.shape[0])
        self.lm, self.tokenizer = lm, tokenizer
        # LoRA goes on the inner transformer, so the adapter applies to the bare model of later stages;
        # the LM head is only needed here, and stays frozen.
        self.decoder = add_lora(lm.get_decoder(), cfg.lora, seed=cfg.seed)
        self.model = MNTPModel(self.decoder, lm.get_output_embeddings()).to(acc.device)

    def make_batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self.masker(self.train_blocks[shard(indices, self.rank, self.world_size)])

    def step(self, prepared, batch, accelerator) -> dict[str, float]:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            out = prepared(**batch)
        accelerator.backward(out["loss"])
        return {
            "loss": float(out["loss"].detach()),
            "accuracy": float(out["correct"]) / max(int(out["count"]), 1),
            "tokens": int(batch["attention_mask"].sum()),
        }

    def evaluate(self, prepared) -> dict[str, float]:
        if self.eval_blocks.shape[0] == 0:
            return {}
        cfg, acc = self.cfg, self.acc
        subset = self.eval_blocks[: cfg.eval_batches * cfg.batch_size]
        with acc.autocast():
            return evaluate_mntp(
                acc.unwrap_model(prepared), subset, self.masker, cfg.batch_size, cfg.seed, acc.device
            )

    def retrieval_encoder(self):
        """The bidirectional decoder being trained (with its LoRA), mean-pooled: what SimCSE starts from."""
        from decoder2vec.encoding.encoder import Encoder

        if getattr(self, "_retrieval_encoder", None) is None:
            self._retrieval_encoder = Encoder(
                self.decoder, self.tokenizer, pooling="mean", max_length=self.cfg.max_seq_length
            )
        return self._retrieval_encoder

    def stage(self) -> Stage:
        return Stage(
            self.name, self.model, self.plan, self.make_batch, self.step, self.evaluate, self.cfg.eval_every
        )

    def save(self, out_dir: Path) -> tuple[Path, Path | None]:
        """``adapter/`` and, with ``cfg.merge``, ``merged/`` (the causal LM with the adapter merged in)."""
        adapter = save_adapter(self.decoder, out_dir / "adapter")
        if not self.cfg.merge:
            return adapter, None
        self.decoder.merge_and_unload()  # merges into lm.model in place
        lm, tokenizer = self.lm, self.tokenizer
        merged = replace_folder(
            out_dir / "merged", lambda tmp: (lm.save_pretrained(tmp), tokenizer.save_pretrained(tmp))
        )
        return adapter, merged
