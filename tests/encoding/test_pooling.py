"""Each pooling mode against a hand-written per-row loop."""

import pytest
import torch

from decoder2vec.encoding.pooling import POOLING_MODES, pool


def reference_pool(hidden, pool_mask, attention_mask, mode):
    rows = []
    for h, pm, am in zip(hidden, pool_mask.tolist(), attention_mask.tolist()):
        pooled = [i for i, flag in enumerate(pm) if flag]
        if mode == "mean":
            rows.append(sum(h[i] for i in pooled) / len(pooled))
        elif mode == "weighted_mean":
            weights = list(range(1, len(pooled) + 1))
            rows.append(sum(w * h[i] for w, i in zip(weights, pooled)) / sum(weights))
        elif mode == "last_token":
            rows.append(h[pooled[-1]])
        elif mode == "bos":
            rows.append(h[am.index(1)])
    return torch.stack(rows)


@pytest.mark.parametrize("mode", POOLING_MODES)
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pool_matches_reference(mode, padding_side):
    torch.manual_seed(0)
    lengths, unpooled = [5, 2, 7, 3], [0, 1, 3, 0]
    width = max(lengths)
    hidden = torch.randn(4, width, 6)
    attention = torch.zeros(4, width, dtype=torch.long)
    pool_mask = torch.zeros(4, width, dtype=torch.long)
    for row, (n, skip) in enumerate(zip(lengths, unpooled)):
        start = width - n if padding_side == "left" else 0
        attention[row, start : start + n] = 1
        pool_mask[row, start + skip : start + n] = 1
    # Garbage in padded slots must not leak into any mode.
    hidden[attention == 0] = 1e6
    expected = reference_pool(hidden, pool_mask, attention, mode)
    torch.testing.assert_close(pool(hidden, pool_mask, attention, mode), expected, rtol=1e-5, atol=1e-5)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown pooling mode 'max'"):
        pool(torch.zeros(1, 2, 3), torch.ones(1, 2), torch.ones(1, 2), "max")


def test_bf16_states_are_summed_in_float32():
    hidden = torch.full((1, 300, 4), 1.001).bfloat16()
    mask = torch.ones(1, 300, dtype=torch.long)
    out = pool(hidden, mask, mask, "mean")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, hidden.float().mean(dim=1))
