"""Pool token states into one vector per text. Vectorised over the batch: no per-row Python loops.

``pool_mask`` marks the tokens that may be pooled (the text, not the instruction, never padding);
``attention_mask`` marks every real token.
"""

from __future__ import annotations

import torch

from decoder2vec.encoder_config import POOLING_MODES, check_pooling_mode

__all__ = ["POOLING_MODES", "check_pooling_mode", "pool"]


def pool(
    hidden: torch.Tensor, pool_mask: torch.Tensor, attention_mask: torch.Tensor, mode: str
) -> torch.Tensor:
    """Reduce ``hidden`` (B, L, D) to (B, D) with ``mode``; sums are taken in float32."""
    check_pooling_mode(mode)
    hidden = hidden.float()
    if mode == "mean":
        weights = pool_mask.to(hidden.dtype)
    elif mode == "weighted_mean":
        # Position-weighted mean (SGPT): the k-th pooled token gets weight k, so later tokens,
        # which have seen more of the text in a causal model, count more.
        weights = (pool_mask.cumsum(dim=1) * pool_mask).to(hidden.dtype)
    else:
        if mode == "last_token":
            positions = torch.arange(pool_mask.shape[1], device=pool_mask.device)
            index = (pool_mask * positions).argmax(dim=1)  # last pooled position
        else:  # "bos": the first real token (the BOS token when the tokenizer adds one)
            index = attention_mask.int().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    summed = torch.einsum("bld,bl->bd", hidden, weights)
    return summed / weights.sum(dim=1, keepdim=True).clamp_min(1e-9)
