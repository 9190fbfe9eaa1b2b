"""Stack several tokenized batches into one, so a step runs a single forward (one DDP forward per backward)."""

from __future__ import annotations

import torch

from decoder2vec.encoding.tokenization import TokenizedBatch


def concat_batches(batches: list[TokenizedBatch], pad_id: int) -> TokenizedBatch:
    """Rows of all ``batches`` in order, right-padded to a common width (padding is masked everywhere)."""
    width = max(b.input_ids.shape[1] for b in batches)

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return TokenizedBatch(
        input_ids=torch.cat([pad(b.input_ids, pad_id) for b in batches]),
        attention_mask=torch.cat([pad(b.attention_mask, 0) for b in batches]),
        pool_mask=torch.cat([pad(b.pool_mask, 0) for b in batches]),
        position_ids=torch.cat([pad(b.position_ids, 0) for b in batches]),
    )
