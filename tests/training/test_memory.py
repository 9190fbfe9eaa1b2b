"""Issue #22, item 9: gradient checkpointing is on by default only where the activations would not fit
(it made MNTP 2.2x slower on an H200 with memory to spare). Pure functions, so checked on CPU."""

import pytest

from decoder2vec.training import memory
from decoder2vec.training.config import LoraSettings, MNTPConfig, SimCSEConfig, SupervisedConfig

GIB = 2**30


def test_activation_estimate_is_the_stated_formula():
    # SmolLM2-135M (h 576, 30 layers, 9 heads), MNTP batch 32 x 512 tokens in bf16 with SDPA:
    # 32 * 512 * 30 * 34 * 576 bytes
    sdpa = memory.activation_bytes(
        sequences=32, seq_len=512, hidden_size=576, layers=30, heads=9, eager_attention=False
    )
    assert sdpa == 32 * 512 * 30 * 34 * 576 and 8.9 < sdpa / GIB < 9.0
    eager = memory.activation_bytes(
        sequences=32, seq_len=512, hidden_size=576, layers=30, heads=9, eager_attention=True
    )
    assert eager - sdpa == 32 * 512 * 30 * 5 * 9 * 512  # the attention scores eager attention keeps
    fp32 = memory.activation_bytes(
        sequences=32, seq_len=512, hidden_size=576, layers=30, heads=9, eager_attention=False, element_bytes=4
    )
    assert fp32 == 2 * sdpa


def test_sequences_and_layers_follow_the_stage():
    assert memory.sequences_per_backward(MNTPConfig(batch_size=32)) == 32
    assert memory.sequences_per_backward(SimCSEConfig(batch_size=64)) == 128  # two dropout views
    assert memory.sequences_per_backward(SimCSEConfig(batch_size=64, mini_batch_size=16)) == 16  # GradCache
    assert memory.sequences_per_backward(SupervisedConfig(batch_size=8, num_negatives=2)) == 32

    class Config:  # a transformers config's fields
        num_hidden_layers, hidden_size, num_attention_heads, _attn_implementation = 30, 576, 9, "sdpa"

    cfg = MNTPConfig(batch_size=4, max_seq_length=128)
    full = memory.estimate_activations(cfg, Config())
    cfg.lora = LoraSettings(top_layers=6)  # backward stops at the first adapted layer
    assert memory.estimate_activations(cfg, Config()) * 5 == full


@pytest.mark.parametrize(
    ("setting", "device", "activations", "free", "on", "why"),
    [
        (None, "cuda", 3.1 * GIB, 120 * GIB, False, "off: estimated activations 3.1 GiB of 120.0 GiB free"),
        (None, "cuda", 95 * GIB, 120 * GIB, True, "on: estimated activations 95.0 GiB would not fit in 70%"),
        (None, "cuda", 20 * GIB, 10 * GIB, True, "would not fit"),
        (None, "cpu", None, None, False, "off: not on a GPU"),
        (True, "cuda", 1 * GIB, 120 * GIB, True, "on: set in the recipe"),  # explicit settings win
        (False, "cuda", 500 * GIB, 120 * GIB, False, "off: set in the recipe"),
        (True, "cpu", None, None, True, "on: set in the recipe"),
    ],
)
def test_checkpointing_only_when_activations_would_not_fit(setting, device, activations, free, on, why):
    decided, reason = memory.decide_checkpointing(
        setting, device_type=device, activations=activations, free=free
    )
    assert decided is on and why in reason and reason.startswith("gradient checkpointing")
