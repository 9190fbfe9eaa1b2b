"""What every stage recipe shares: loading the backbone for training, run identity, saving outputs."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from decoder2vec.backbone.cache import replace_folder
from decoder2vec.training.checks import check_stage
from decoder2vec.training.settings import SELECTION_KEYS, StageConfig, to_dict

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    run_dir: Path
    adapter: Path | None  # None: the stage trained no adapter (a fully fine-tuned distillation student)
    merged: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    # with retrieval_dev: {"metric", "score", "step"} of the evaluation whose weights the outputs hold
    selected: dict[str, Any] | None = None


def read_retrieval_dev(cfg: StageConfig, stage: str):
    """The stage's retrieval dev set (subsampled as configured), or None; read before any model loads, so a
    bad folder fails in seconds with its file and line."""
    if not cfg.retrieval_dev:
        return None
    from decoder2vec.evaluation.retrieval import load_dev_set

    log.info("%s: checkpoint selection on %s by %s", stage, cfg.retrieval_dev, cfg.select_metric)
    return load_dev_set(
        cfg.retrieval_dev, cfg.retrieval_dev_split, cfg.retrieval_dev_max_queries, cfg.retrieval_dev_max_docs
    )


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

    def retrieval_encoder(self):
        """An ``Encoder`` over the weights being trained, for the retrieval dev set (recipes override)."""
        raise NotImplementedError(f"stage {self.name} cannot be evaluated on retrieval")

    def evaluate_retrieval_dev(self) -> dict[str, float]:
        """The dev set's scores (x100) with the current weights, in eval mode (no dropout); the module's
        train/eval mode is restored after."""
        from decoder2vec.evaluation.retrieval import RETRIEVAL_METRICS, evaluate_retrieval

        encoder = self.retrieval_encoder()
        module, was_training = encoder.module, encoder.module.training
        module.eval()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # passages longer than the training length are cut to it: a fixed, stated proxy
                warnings.filterwarnings("ignore", message=".*were longer than max_length.*")
                scores = evaluate_retrieval(
                    encoder,
                    self.retrieval_dev,
                    query_instruction=self.cfg.retrieval_dev_instruction,
                    batch_size=self.cfg.batch_size,
                    show_progress_bar=False,
                )
        finally:
            module.train(was_training)
        return {key: scores[key] for key in RETRIEVAL_METRICS}

    def _with_selection(self, stage):
        """``stage`` also scored on the retrieval dev set, and selected by ``select_metric``."""
        inner = stage.evaluate

        def evaluate(model) -> dict[str, float]:
            scores = dict(inner(model)) if inner is not None else {}
            return {**scores, **self.evaluate_retrieval_dev()}

        stage.evaluate, stage.eval_every, stage.select_metric = (
            evaluate,
            self.cfg.eval_every,
            self.cfg.select_metric,
        )
        return stage

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
        self.retrieval_dev = read_retrieval_dev(self.cfg, self.name)
        acc = make_accelerator(self.cfg)
        self.setup(acc)
        ident = self.run_identity(acc.num_processes)
        stage = self.stage()
        if self.retrieval_dev is not None:
            stage = self._with_selection(stage)
        metrics = train(
            stage,
            self.cfg,
            out_dir,
            ident,
            acc,
            resume=resume,
            overwrite=overwrite,
            callbacks=callbacks,
        )
        result = StageResult(out_dir, out_dir / "adapter", metrics=metrics, selected=metrics.get("selected"))
        self.metrics = metrics  # (for save's records)
        if acc.is_main_process:
            if result.selected is not None:
                # the outputs are the best evaluation's weights, not the last step's
                from decoder2vec.training.loop import load_best

                load_best(out_dir, stage.model)
                log.info(
                    "%s: saving step %d, the best %s (%.2f)",
                    self.name,
                    result.selected["step"],
                    result.selected["metric"],
                    result.selected["score"],
                )
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
    """What must match for a resume to be exact: stage, full recipe and the number of processes.

    Without ``retrieval_dev`` the selection settings mean nothing and are left out, so runs made before
    they existed still resume."""
    recipe = to_dict(cfg)
    if not cfg.retrieval_dev:
        for key in SELECTION_KEYS:
            recipe.pop(key, None)
    return {"stage": stage, "world_size": world_size, "recipe": recipe}


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
