"""Load a decoder backbone and its tokenizer from an alias, a GGUF file, a folder or a hub id.

Reading and writing a resolved model folder is :mod:`decoder2vec.backbone.model_io`'s (its names are
importable from here as before); this module adds the names: aliases, the shipped encoders (built on first
use), GGUF files and hub ids.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from decoder2vec.backbone.bidirectional import AttentionCheck, verify_attention
from decoder2vec.backbone.model_io import (
    TESTED_FAMILIES,
    default_dtype,
    load_from_path,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    save_backbone,
)

# torch-free, re-exported: every loader starts there
from decoder2vec.backbone.source import resolve_model_path

__all__ = [
    "TESTED_FAMILIES",
    "check_attention",
    "default_dtype",
    "load_backbone",
    "load_tokenizer",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_path",
    "save_backbone",
]

log = logging.getLogger(__name__)


def load_backbone(
    name_or_path: str | Path,
    *,
    bidirectional: bool = True,
    with_lm_head: bool = False,
    adapters: list[str | Path] | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
    verify: bool = True,
):
    """Load ``(model, tokenizer)`` in the requested attention mode, verified by a probe.

    ``with_lm_head`` gives the causal-LM class (needed for MNTP); otherwise the bare transformer
    whose last hidden states are pooled into embeddings. ``adapters`` are PEFT folders merged in order.
    """
    return load_from_path(
        resolve_model_path(name_or_path),
        bidirectional=bidirectional,
        with_lm_head=with_lm_head,
        adapters=adapters,
        dtype=dtype,
        device=device,
        attn_implementation=attn_implementation,
        verify=verify,
    )


def check_attention(model, tokenizer) -> AttentionCheck:
    """Re-run the self-check for the mode the model is configured for (used by ``decoder2vec info``)."""
    from decoder2vec.backbone.bidirectional import is_bidirectional

    return verify_attention(model, is_bidirectional(model), set(tokenizer.all_special_ids))
