"""Whether to checkpoint activations: on a GPU, only when they would not fit in its free memory.

Gradient checkpointing keeps only each layer's input and recomputes the layer in the backward pass: an
extra forward per step (MNTP on the 135M model ran 2.2x slower with it on an H200 that had memory to
spare) in exchange for activation memory that no longer grows with the number of layers. So the default
(``gradient_checkpointing: null``) estimates the activations and turns it on only when they would not fit;
``true``/``false`` in a recipe always wins.

The estimate (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
eq. 1) for the activations a decoder layer keeps for backward, in 16-bit precision::

    bytes = sequences x seq_len x layers x (34 x hidden_size + 5 x heads x seq_len)

34·h bytes per token per layer cover the inputs of the attention and MLP projections, the norms, the
activation function and the dropout masks; 5·a·s bytes per token per layer are the attention scores,
their softmax and its dropout mask, which only eager attention materialises (SDPA and flash kernels
recompute them). fp32 activations double it. ``layers`` counts only the layers the backward pass runs
through (with ``lora.top_layers`` the layers below keep nothing), and ``sequences`` is what one
forward-with-gradients holds: the batch, times two SimCSE views or 2 + negatives supervised texts, capped
by the GradCache ``mini_batch_size``.
"""

from __future__ import annotations

from typing import Any

GIB = 2**30
BYTES_PER_TOKEN_PER_LAYER = 34  # x hidden_size, 16-bit activations, whatever the attention kernel
EAGER_ATTENTION_BYTES = 5  # x heads x sequence length, only where the attention scores are materialised
# The share of free GPU memory (measured once the weights are loaded) the activations may take. The rest
# is for what the estimate leaves out: the LoRA weights, their gradients and AdamW state (well under 1% of
# the weights), MNTP's LM-head logits on the masked rows, the allocator's fragmentation, CUDA workspaces.
FREE_MEMORY_SHARE = 0.7


def activation_bytes(
    *,
    sequences: int,
    seq_len: int,
    hidden_size: int,
    layers: int,
    heads: int,
    eager_attention: bool,
    element_bytes: int = 2,
) -> int:
    """Activation memory one forward-with-gradients keeps for backward (the formula in the module docstring)."""
    per_token_layer = BYTES_PER_TOKEN_PER_LAYER * hidden_size
    if eager_attention:
        per_token_layer += EAGER_ATTENTION_BYTES * heads * seq_len
    return sequences * seq_len * layers * per_token_layer * element_bytes // 2


def sequences_per_backward(cfg: Any) -> int:
    """How many sequences one forward-with-gradients of a stage holds (see the module docstring)."""
    from decoder2vec.training.settings import SimCSEConfig, SupervisedConfig

    views = 1
    if isinstance(cfg, SimCSEConfig):
        views = 2  # the two dropout views go through one forward
    elif isinstance(cfg, SupervisedConfig):
        views = 2 + cfg.num_negatives  # query, positive and the hard negatives
    rows = cfg.batch_size * views
    mini = getattr(cfg, "mini_batch_size", None)
    return min(rows, mini) if mini else rows


def estimate_activations(cfg: Any, model_config: Any, element_bytes: int = 2) -> int:
    """:func:`activation_bytes` for stage settings ``cfg`` on a model with transformers config ``model_config``."""
    layers = int(model_config.num_hidden_layers)
    top = getattr(getattr(cfg, "lora", None), "top_layers", None)
    return activation_bytes(
        sequences=sequences_per_backward(cfg),
        seq_len=int(cfg.max_seq_length),
        hidden_size=int(model_config.hidden_size),
        layers=min(layers, top) if top else layers,
        heads=int(model_config.num_attention_heads),
        eager_attention=getattr(model_config, "_attn_implementation", None) == "eager",
        element_bytes=element_bytes,
    )


def decide_checkpointing(
    setting: bool | None, *, device_type: str, activations: int | None = None, free: int | None = None
) -> tuple[bool, str]:
    """``(on, why)``: the recipe's ``setting`` when given; else on only for a GPU whose ``free`` bytes
    (after the weights) cannot hold ``FREE_MEMORY_SHARE``-worth of the estimated ``activations``."""
    if setting is not None:
        return bool(setting), f"gradient checkpointing {'on' if setting else 'off'}: set in the recipe"
    if device_type != "cuda" or activations is None or free is None:
        return False, "gradient checkpointing off: not on a GPU"
    need, have = activations / GIB, free / GIB
    if activations <= FREE_MEMORY_SHARE * free:
        return (
            False,
            f"gradient checkpointing off: estimated activations {need:.1f} GiB of {have:.1f} GiB free",
        )
    return True, (
        f"gradient checkpointing on: estimated activations {need:.1f} GiB would not fit in "
        f"{FREE_MEMORY_SHARE:.0%} of {have:.1f} GiB free"
    )


def free_gpu_bytes(device) -> int:
    """Free memory of a CUDA ``device`` as the driver reports it (other processes' use included)."""
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return int(free)
