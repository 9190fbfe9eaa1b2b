"""The pooled model: a (bidirectional) decoder backbone followed by pooling, as one ``nn.Module``.

It is the sentence-transformers Transformer -> Pooling (-> Dense) chain: :class:`~decoder2vec.Encoder` runs it under
inference mode to encode, and the contrastive training recipes wrap the very same module (with LoRA in
its backbone) to train, so encoding and training can never pool differently.
"""

from __future__ import annotations

import torch
from torch import nn

from decoder2vec.encoding.pooling import check_pooling_mode, pool
from decoder2vec.encoding.tokenization import TokenizedBatch


class PooledModel(nn.Module):
    """``(input_ids, attention_mask, position_ids, pool_mask) -> (B, D)`` embeddings.

    ``projection``, when set, is a bias-free linear map applied after pooling (sentence-transformers'
    Dense with an identity activation): a distilled student's map into its teacher's space.
    """

    def __init__(
        self, backbone: nn.Module, pooling: str = "mean", projection: nn.Linear | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = check_pooling_mode(pooling)
        self.projection = projection

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled rows -> embeddings (the projection, if any; it is linear, so it also commutes with any
        averaging of pooled rows, e.g. late chunking's spans)."""
        if self.projection is None:
            return pooled
        return self.projection(pooled.to(self.projection.weight.dtype))

    def forward(self, input_ids, attention_mask, position_ids, pool_mask) -> torch.Tensor:
        # no KV cache: an encoder never generates, a cache would only cost memory and copies
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        return self.project(pool(hidden, pool_mask, attention_mask, self.pooling))


def embed(module: nn.Module, batch: TokenizedBatch, device: torch.device | str) -> torch.Tensor:
    """Run ``module`` (a :class:`PooledModel`, possibly DDP-wrapped) on a tokenized batch."""
    b = batch.to(device)
    return module(b.input_ids, b.attention_mask, b.position_ids, b.pool_mask)
