"""What every stage recipe shares: loading the backbone for training, run identity, saving outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from decoder2vec.backbone.cache import replace_folder
from decoder2vec.training.config import StageConfig, to_dict


@dataclass
class StageResult:
    run_dir: Path
    adapter: Path
    merged: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def load_for_training(cfg: StageConfig, accelerator, *, with_lm_head: bool):
    """The bidirectional backbone (with ``cfg.adapters`` merged in) on this process's device."""
    from decoder2vec.backbone.loading import load_backbone

    model, tokenizer = load_backbone(
        cfg.model,
        bidirectional=True,
        with_lm_head=with_lm_head,
        adapters=list(cfg.adapters) or None,
        dtype=cfg.dtype,  # None: load_backbone's default (fp32 on CPU, bf16 on capable GPUs)
        device=accelerator.device,
    )
    checkpointing = cfg.gradient_checkpointing
    if checkpointing is None:
        checkpointing = accelerator.device.type == "cuda"
    if checkpointing:
        # transformers 5 renamed it (the old name warns); older releases only have the old one
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.config.use_cache = False
    return model, tokenizer


def identity(stage: str, cfg: StageConfig, world_size: int) -> dict[str, Any]:
    """What must match for a resume to be exact: stage, full recipe and the number of processes."""
    return {"stage": stage, "world_size": world_size, "recipe": to_dict(cfg)}


def save_adapter(peft_model, target: Path) -> Path:
    """The stage's LoRA adapter as a PEFT folder (adapter_config.json + adapter_model.safetensors)."""
    # Embeddings are never trained (a resized vocabulary only adds the unused MNTP mask row), so the
    # adapter stays LoRA-only and applies to the original base model.
    return replace_folder(
        target,
        lambda tmp: peft_model.save_pretrained(
            str(tmp), safe_serialization=True, save_embedding_layers=False
        ),
    )


def tokens_in(attention_mask: torch.Tensor) -> int:
    return int(attention_mask.sum())
