"""Token masking for masked next token prediction (MNTP).

MNTP masks a fraction of the input tokens and trains the model to recover the token at masked position
``i`` from the output at position ``i - 1`` (the decoder's native next-token head; the shift is ``losses.shift_labels``).
So position 0 can never be a target, and neither can special or padding tokens.
"""

from __future__ import annotations

from typing import Literal

import torch

from decoder2vec.training.errors import TrainingError

IGNORE_INDEX = -100
Strategy = Literal["bert", "all_mask"]
MaskTokenKind = Literal["blank", "eos", "pad", "new"]

#: Paper defaults: p=0.2 with BERT-style replacement (LLaMA models), p=0.8 all-mask (Mistral).
DEFAULT_PROBABILITY: dict[str, float] = {"bert": 0.2, "all_mask": 0.8}


def resolve_mask_token(tokenizer, kind: MaskTokenKind | str = "blank") -> tuple[int, bool]:
    """Pick the id used as the mask token; returns ``(token_id, added_new_token)``.

    ``blank`` is ``"_"`` (LLM2Vec's default: an ordinary, already-trained token), ``eos``/``pad`` reuse those
    special tokens, ``new`` adds a ``<mask>`` special token (the caller must resize the embeddings).
    """
    if kind in ("blank", "_"):
        token_id = tokenizer.convert_tokens_to_ids("_")
        if token_id is None or token_id == tokenizer.unk_token_id:
            ids = tokenizer.encode("_", add_special_tokens=False)
            if len(ids) != 1:
                raise TrainingError(f"mask token '_' is not a single token in this vocabulary (got {ids})")
            token_id = ids[0]
        return int(token_id), False
    if kind == "eos":
        if tokenizer.eos_token_id is None:
            raise TrainingError("mask_token='eos' but the tokenizer has no eos token")
        return int(tokenizer.eos_token_id), False
    if kind == "pad":
        if tokenizer.pad_token_id is None:
            raise TrainingError("mask_token='pad' but the tokenizer has no pad token")
        return int(tokenizer.pad_token_id), False
    if kind in ("new", "<mask>", "mask"):
        added = tokenizer.add_special_tokens({"mask_token": "<mask>"})
        return int(tokenizer.mask_token_id), bool(added)
    raise TrainingError(f"unknown mask_token {kind!r}: use blank, eos, pad or new")


def maskable_positions(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: list[int] | set[int]
) -> torch.Tensor:
    """Bool (B, L): True where a token may be masked (real, non-special, and not at position 0)."""
    ok = attention_mask.bool().clone()
    if special_ids:
        ok &= ~torch.isin(input_ids, torch.tensor(sorted(special_ids), device=input_ids.device))
    ok[:, 0] = False  # no output at position -1 to predict it from
    return ok


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    probability: float,
    strategy: Strategy | str = "bert",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``input_ids``; returns ``(masked_input_ids, labels)``.

    Each maskable token is selected with ``probability``. ``labels`` holds the original id at selected
    positions and ``IGNORE_INDEX`` elsewhere (unshifted; the loss does the shift). Selected tokens become
    the mask token (``all_mask``), or 80% mask / 10% random token / 10% unchanged (``bert``).
    """
    if not 0.0 < probability < 1.0:
        raise TrainingError(f"mask probability must be in (0, 1), got {probability}")
    if strategy not in ("bert", "all_mask"):
        raise TrainingError(f"unknown masking strategy {strategy!r}: use bert or all_mask")
    dev = input_ids.device

    def uniform(shape):  # sampled on CPU so a CPU generator works for any device
        return torch.rand(shape, generator=generator).to(dev)

    selected = (uniform(input_ids.shape) < probability) & maskable
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    masked = input_ids.clone()
    if strategy == "all_mask":
        masked[selected] = mask_token_id
        return masked, labels
    draw = uniform(input_ids.shape)
    to_mask = selected & (draw < 0.8)
    to_random = selected & (draw >= 0.8) & (draw < 0.9)
    masked[to_mask] = mask_token_id
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator).to(dev)
    masked[to_random] = random_ids[to_random]
    return masked, labels
