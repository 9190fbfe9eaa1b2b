"""Switch a decoder between causal and bidirectional attention, and prove which one it runs.

transformers >= 5.2 reads ``config.is_causal`` in every supported decoder: with ``False`` the mask
builder makes a padding-only (bidirectional) mask and the attention kernels get ``is_causal=False``.
We set that flag (plus ``use_bidirectional_attention`` that Gemma-style configs and other engines
read) and never touch model code. Because older versions or other architectures may silently ignore
the flag, :func:`verify_attention` measures the behaviour instead of trusting it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers

from decoder2vec.errors import BidirectionalityError

PROBE_LENGTH = 8


def set_bidirectional(model_or_config, enabled: bool) -> None:
    """Make ``model_or_config`` attend bidirectionally (``enabled``) or causally, in place."""
    config = getattr(model_or_config, "config", model_or_config)
    config.is_causal = not enabled
    config.use_bidirectional_attention = enabled


def is_bidirectional(model_or_config) -> bool:
    """What the config asks for (not a proof: see :func:`verify_attention`)."""
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "is_causal", True) is False


@dataclass(frozen=True)
class AttentionCheck:
    """Result of the probe: how far token 0's state moved when only the last token changed."""

    bidirectional: bool
    first_token_shift: float  # relative change of token 0's hidden state, no padding in the batch
    first_token_shift_padded: float  # the same with a padded batch (the explicit-mask code path)

    def describe(self) -> str:
        mode = "bidirectional" if self.bidirectional else "causal"
        return (
            f"{mode} (token 0 moved by {self.first_token_shift:.2e} unpadded, "
            f"{self.first_token_shift_padded:.2e} padded, when the last token changed)"
        )


def backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    """The bare transformer (e.g. ``LlamaModel``) inside a causal-LM or PEFT wrapper."""
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    base = getattr(model, "base_model", model)
    return base if isinstance(base, torch.nn.Module) else model


def _probe_ids(config, length: int, special_ids: set[int]) -> list[int]:
    vocab = int(config.vocab_size)
    ids, candidate = [], vocab // 3
    while len(ids) < length:
        candidate = (candidate + 7919) % vocab
        if candidate not in special_ids:
            ids.append(candidate)
    return ids


def probe_inputs(config, special_ids: set[int] = frozenset()) -> tuple[torch.Tensor, torch.Tensor]:
    """Two probe sequences that differ only in their last token, padded by one column: ``(ids, mask)``,
    each (2, length + 1). The unpadded probe is ``ids[:, :-1]``; padding is a copy of token 0, masked."""
    window = getattr(config, "sliding_window", None) or PROBE_LENGTH
    length = max(3, min(PROBE_LENGTH, int(window)))
    ids = _probe_ids(config, length + 1, set(special_ids))
    probe = torch.tensor([ids[:length], ids[: length - 1] + [ids[length]]])
    pad = torch.full((2, 1), ids[0], dtype=probe.dtype)
    mask = torch.cat([torch.ones_like(probe), torch.zeros_like(pad)], dim=1)
    return torch.cat([probe, pad], dim=1), mask


def first_token_shift(hidden) -> float:
    """Relative change of token 0's state between the two probe rows of ``hidden`` (2, L, D)."""
    h = torch.as_tensor(hidden).float()
    return float((h[0, 0] - h[1, 0]).norm() / h[0, 0].norm().clamp_min(1e-12))


@torch.no_grad()
def measure_first_token_shift(
    model: torch.nn.Module, special_ids: set[int] = frozenset()
) -> tuple[float, float]:
    """Change only the last probe token and return token 0's relative shift (unpadded, padded)."""
    backbone = backbone_of(model)
    device = next(backbone.parameters()).device
    padded, mask = (t.to(device) for t in probe_inputs(backbone.config, special_ids))
    probe = padded[:, :-1]
    length = probe.shape[1]
    positions = torch.arange(length, device=device).expand(2, -1)

    was_training = backbone.training
    backbone.eval()
    try:
        # Path 1: no padding, so transformers may skip the mask and rely on the kernel's is_causal.
        hidden = backbone(input_ids=probe, position_ids=positions, use_cache=False).last_hidden_state
        # Path 2: one padding column forces an explicit mask tensor.
        padded_positions = torch.arange(length + 1, device=device).expand(2, -1)
        hidden_padded = backbone(
            input_ids=padded, attention_mask=mask, position_ids=padded_positions, use_cache=False
        ).last_hidden_state
    finally:
        backbone.train(was_training)
    return first_token_shift(hidden), first_token_shift(hidden_padded)


# A causal model's token 0 cannot see the last token at all, so its shift is ~0 (rounding only);
# a bidirectional one moves by orders of magnitude more.
CAUSAL_TOLERANCE = 1e-4


def verify_attention(
    model: torch.nn.Module, expect_bidirectional: bool, special_ids: set[int] = frozenset()
) -> AttentionCheck:
    """Prove ``model`` runs the attention mode it is configured for, or raise :class:`BidirectionalityError`.

    The model is first probed in causal mode (a decoder must not let token 0 see the future; this
    also rejects encoder models passed by mistake), then in the requested mode.
    """
    arch = type(backbone_of(model)).__name__
    wanted = is_bidirectional(model)
    try:
        set_bidirectional(model, False)
        causal_shift = max(measure_first_token_shift(model, special_ids))
        if causal_shift > CAUSAL_TOLERANCE:
            raise BidirectionalityError(
                f"{arch} is not a causal decoder: in causal mode token 0's state still changed "
                f"(relative shift {causal_shift:.2e}) when only the last token changed. "
                "decoder2vec needs a decoder-only language model."
            )
        set_bidirectional(model, expect_bidirectional)
        shift, shift_padded = measure_first_token_shift(model, special_ids)
    finally:
        set_bidirectional(model, wanted)

    check = AttentionCheck(expect_bidirectional, shift, shift_padded)
    if expect_bidirectional and min(shift, shift_padded) <= CAUSAL_TOLERANCE:
        impl = getattr(backbone_of(model).config, "_attn_implementation", "?")
        raise BidirectionalityError(
            f"bidirectional attention was requested, but {arch} still attends causally "
            f"(attn_implementation={impl}, transformers {transformers.__version__}): {check.describe()}. "
            "decoder2vec relies on transformers >= 5.2 honouring config.is_causal=False, which Llama, "
            "Mistral, Qwen2/3 and Gemma models do; upgrade transformers, try attn_implementation='eager', "
            "or load with bidirectional=False."
        )
    if not expect_bidirectional and max(shift, shift_padded) > CAUSAL_TOLERANCE:
        raise BidirectionalityError(
            f"causal attention was requested, but {arch} sees future tokens: {check.describe()}"
        )
    return check
