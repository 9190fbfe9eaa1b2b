"""Stage 3b of LLM2Vec: supervised contrastive learning with hard negatives (E5-style data).

Batches come from one task at a time; the instruction is prepended to the query (to both sides for
symmetric tasks) and excluded from pooling. Each query is scored against every positive and every hard
negative of the global batch; optionally, candidates whose text equals the query's positive are dropped.
"""

from __future__ import annotations

import torch

from decoder2vec.training.data.collate import concat_batches
from decoder2vec.training.data.pairs import collate_pairs, read_pairs, task_groups
from decoder2vec.training.data.sampling import BatchPlan, shard
from decoder2vec.training.distributed import gather_objects, gather_with_grad
from decoder2vec.training.errors import CorpusError
from decoder2vec.training.losses import false_negative_mask, hard_negative_loss
from decoder2vec.training.recipes.contrastive import ContrastiveBatch, ContrastiveRecipe
from decoder2vec.training.settings import SupervisedConfig


class SupervisedRecipe(ContrastiveRecipe):
    """Setup, batch and loss of supervised contrastive training with hard negatives."""

    name = "supervised"

    def __init__(self, cfg: SupervisedConfig) -> None:
        super().__init__(cfg)
        if not cfg.data:
            raise CorpusError(
                "the supervised stage needs data: a JSONL file of {query, positive, negatives, instruction, task}"
            )

    def load_data(self, world_size: int) -> BatchPlan:
        cfg = self.cfg
        self.examples = read_pairs(cfg.data, cfg.num_negatives, tuple(cfg.symmetric_tasks))
        return BatchPlan(task_groups(self.examples), cfg.batch_size * world_size, cfg.seed)

    def make_batch(self, indices: list[int]) -> ContrastiveBatch:
        texts = collate_pairs([self.examples[i] for i in shard(indices, self.rank, self.world_size)])
        parts = [
            self.encoder.tokenize(texts.queries, texts.query_instructions),
            self.encoder.tokenize(texts.positives, texts.doc_instructions),
        ]
        if texts.negatives:
            parts.append(self.encoder.tokenize(texts.negatives, texts.negative_instructions))
        sizes = [p.input_ids.shape[0] for p in parts] + ([] if texts.negatives else [0])
        tokens = concat_batches(parts, self.encoder.tokenizer.pad_token_id)
        return ContrastiveBatch(tokens, sizes, texts.positives, texts.negatives)

    def loss(self, reps: torch.Tensor, batch: ContrastiveBatch) -> torch.Tensor:
        q, p, n = reps.split(batch.sizes)
        mask = None
        if self.cfg.filter_false_negatives:
            # a candidate whose text is some query's own positive is not a negative for that query
            pos_keys = gather_objects(batch.positive_keys)
            neg_keys = gather_objects(batch.negative_keys)
            mask = false_negative_mask(pos_keys, pos_keys + neg_keys)
        parts = (gather_with_grad(q), gather_with_grad(p), gather_with_grad(n))
        loss = self.nested_loss(
            lambda q, p, n: hard_negative_loss(q, p, n, self.cfg.temperature, mask), parts
        )
        return loss * self.world_size
