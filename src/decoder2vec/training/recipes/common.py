"""What every stage recipe shares: loading the backbone for training, run identity, saving outputs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from decoder2vec.backbone.cache import replace_folder
from decoder2vec.training.config import StageConfig, check_stage, to_dict

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    run_dir: Path
    adapter: Path | None  # None: the stage trained no adapter (a fully fine-tuned distillation student)
    merged: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class Recipe:
    """A training stage as one object, torchtune-style. Subclasses implement ``setup(accelerator)`` (data
    first, then the model), ``stage()`` (the :class:`~decoder2vec.training.loop.Stage` the generic loop
    runs: model, batch plan, ``make_batch``, ``step``, optional ``evaluate``) and ``save(out_dir)``
    (returns the adapter folder and the merged output, if any). The loop owns checkpoints and resume."""

    name = "stage"

    def __init__(self, cfg: StageConfig) -> None:
        check_stage(cfg, self.name)  # settings first: nothing is loaded or written for an impossible run
        self.cfg = cfg

    def setup(self, accelerator) -> None:
        raise NotImplementedError

    def stage(self):
        raise NotImplementedError

    def save(self, out_dir: Path) -> tuple[Path | None, Path | None]:
        raise NotImplementedError

    def run_identity(self, world_size: int) -> dict[str, Any]:
        """What a resume must match (see :func:`identity`); a recipe may add what its settings do not say."""
        return identity(self.name, self.cfg, world_size)

    def run(
        self,
        out_dir: str | Path,
        *,
        resume: bool = False,
        overwrite: bool = False,
        callbacks: Sequence[Callable[[int], None]] = (),
    ) -> StageResult:
        """Set up, train with the generic loop (checkpoints, exact resume) and save the outputs."""
        from decoder2vec.training.loop import make_accelerator, train

        out_dir = Path(out_dir)
        acc = make_accelerator(self.cfg)
        self.setup(acc)
        ident = self.run_identity(acc.num_processes)
        metrics = train(
            self.stage(),
            self.cfg,
            out_dir,
            ident,
            acc,
            resume=resume,
            overwrite=overwrite,
            callbacks=callbacks,
        )
        result = StageResult(out_dir, out_dir / "adapter", metrics=metrics)
        self.metrics = metrics  # (for save's records)
        if acc.is_main_process:
            result.adapter, result.merged = self.save(out_dir)
        acc.wait_for_everyone()
        return result


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
    checkpointing, why = _checkpointing(cfg, model, accelerator)
    log.info(why)
    if checkpointing:
        # transformers 5 renamed it (the old name warns); older releases only have the old one
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.config.use_cache = False
    return model, tokenizer


def _checkpointing(cfg: StageConfig, model, accelerator) -> tuple[bool, str]:
    """The recipe's setting, or on a GPU: on only when the estimated activations would not fit
    (:mod:`decoder2vec.training.memory`)."""
    from decoder2vec.training import memory

    device = accelerator.device
    if cfg.gradient_checkpointing is not None or device.type != "cuda":
        return memory.decide_checkpointing(cfg.gradient_checkpointing, device_type=device.type)
    sixteen_bit = getattr(accelerator, "mixed_precision", "no") in ("bf16", "fp16") or model.dtype in (
        torch.bfloat16,
        torch.float16,
    )
    activations = memory.estimate_activations(cfg, model.config, element_bytes=2 if sixteen_bit else 4)
    return memory.decide_checkpointing(
        None, device_type="cuda", activations=activations, free=memory.free_gpu_bytes(device)
    )


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
