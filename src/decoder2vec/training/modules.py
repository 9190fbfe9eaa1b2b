"""Training-time model wrappers: LoRA injection and the MNTP head (the pooled embedder is
:class:`decoder2vec.encoding.model.PooledModel`, shared with the Encoder).

The wrappers are ``nn.Module``s whose ``forward`` does all the work, so DDP (via accelerate) sees one
forward per backward and synchronises gradients correctly.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from decoder2vec.encoding.model import PooledModel, embed
from decoder2vec.training.errors import SettingError
from decoder2vec.training.losses import shift_labels
from decoder2vec.training.masking import IGNORE_INDEX
from decoder2vec.training.settings import LoraSettings


def add_lora(model: nn.Module, settings: LoraSettings, seed: int | None = None) -> nn.Module:
    """Wrap ``model`` (a bare transformer) in a fresh LoRA on every linear layer (of the last
    ``settings.top_layers`` decoder layers, if set); everything else frozen.

    With ``seed`` the LoRA initialisation is reproducible (a rerun or resume starts from the same weights).
    """
    from peft import LoraConfig, get_peft_model

    if seed is not None:
        torch.manual_seed(seed)

    targets: str | list[str] = "all-linear"
    if settings.top_layers is not None:
        n = model.config.num_hidden_layers
        if not 1 <= settings.top_layers <= n:
            raise SettingError(
                f"lora.top_layers must be between 1 and {n} (the model's layers), got {settings.top_layers}"
            )
        # every linear module inside decoder layers n-top .. n-1 ("layers.<i>." in HF decoder names)
        top = set(range(n - settings.top_layers, n))
        targets = [
            name
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear)
            and (m := re.search(r"(?:^|\.)layers\.(\d+)\.", name))
            and int(m.group(1)) in top
        ]
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias="none",
    )
    return get_peft_model(model, config)


def set_attention_dropout(model: nn.Module, p: float) -> None:
    """Set attention dropout on the config *and* every attention module (Llama-style modules copy the
    config value at construction, so changing the config alone would have no effect)."""
    model.config.attention_dropout = p
    for module in model.modules():
        if hasattr(module, "attention_dropout") and isinstance(module.attention_dropout, float):
            module.attention_dropout = p


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that are being trained (the LoRA weights), by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class MNTPModel(nn.Module):
    """Bidirectional decoder + frozen LM head; the loss is computed only at masked positions.

    Only rows whose *next* token is masked go through the LM head (the vocabulary projection is the
    largest activation by far: 20% of the rows is 5x less memory than ``logits`` for the full block).
    """

    def __init__(self, decoder: nn.Module, lm_head: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.lm_head = lm_head
        for p in self.lm_head.parameters():
            p.requires_grad_(False)

    def forward(self, input_ids, attention_mask, position_ids, labels) -> dict[str, torch.Tensor]:
        hidden = self.decoder(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        targets = shift_labels(labels)
        keep = targets != IGNORE_INDEX
        logits = self.lm_head(hidden[keep]).float()
        count = keep.sum()
        # sum / count instead of mean: a batch without masked tokens gives 0, not NaN
        loss = F.cross_entropy(logits, targets[keep], reduction="sum") / count.clamp_min(1)
        correct = (logits.argmax(-1) == targets[keep]).sum()
        return {"loss": loss, "correct": correct.detach(), "count": count.detach()}


# The pooled embedder *is* the encoder's module (kept under its training-side name).
Embedder = PooledModel

__all__ = [
    "Embedder",
    "MNTPModel",
    "PooledModel",
    "add_lora",
    "embed",
    "set_attention_dropout",
    "trainable_state",
]
