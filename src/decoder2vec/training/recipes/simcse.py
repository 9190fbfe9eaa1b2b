"""Stage 3a of LLM2Vec: unsupervised SimCSE. Each sentence is embedded twice with dropout active; the two
views are positives, the other sentences of the (global) batch are negatives."""

from __future__ import annotations

import torch

from decoder2vec.training.data.collate import concat_batches
from decoder2vec.training.data.corpus import read_sentences
from decoder2vec.training.data.sampling import BatchPlan, shard
from decoder2vec.training.distributed import gather_with_grad
from decoder2vec.training.losses import simcse_loss
from decoder2vec.training.recipes.contrastive import ContrastiveBatch, ContrastiveRecipe
from decoder2vec.training.settings import SimCSEConfig


class SimCSERecipe(ContrastiveRecipe):
    """Setup, batch and loss of unsupervised SimCSE (the embed-and-backward step is the base class's)."""

    name = "simcse"

    def __init__(self, cfg: SimCSEConfig) -> None:
        super().__init__(cfg)
        self.attention_dropout = cfg.attention_dropout  # the dropout that makes the two views differ

    def load_data(self, world_size: int) -> BatchPlan:
        self.sentences = read_sentences(self.cfg.data, self.cfg.text_field, self.cfg.min_words)
        return BatchPlan.single(len(self.sentences), self.cfg.batch_size * world_size, self.cfg.seed)

    def make_batch(self, indices: list[int]) -> ContrastiveBatch:
        texts = [self.sentences[i] for i in shard(indices, self.rank, self.world_size)]
        one = self.encoder.tokenize(texts)
        # the two dropout views, stacked so they go through one forward
        tokens = concat_batches([one, one], self.encoder.tokenizer.pad_token_id)
        return ContrastiveBatch(tokens, [len(texts), len(texts)])

    def loss(self, reps: torch.Tensor, batch: ContrastiveBatch) -> torch.Tensor:
        a, b = reps.split(batch.sizes)
        # every sentence's second view is its positive; all other sentences of the global batch are negatives
        views = (gather_with_grad(a), gather_with_grad(b))
        loss = self.nested_loss(lambda x, y: simcse_loss(x, y, self.cfg.temperature), views)
        return loss * self.world_size
