"""What settings values are possible: :func:`check_stage`, run before a stage loads anything (by every
recipe, and by ``convert`` for all its stages before the first one starts).

Imports the settings (and, when a check needs them, the pooling modes and retrieval metrics), never the
stage registry: every recipe uses it, and the registry names the recipes.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

from decoder2vec.training.errors import SettingError
from decoder2vec.training.settings import (
    ContrastiveConfig,
    DistillConfig,
    MNTPConfig,
    SimCSEConfig,
    StageConfig,
    SupervisedConfig,
)

# Learning rate x steps below which a LoRA stage barely moves the model. The paper's stages sit at
# 0.03-0.05 (e.g. SimCSE 3e-5 x 1000 steps of batch 128); 40 steps at the paper's rates give 0.001.
SHORT_RUN_BUDGET = 0.01


def short_run_warning(cfg: StageConfig, stage: str) -> str | None:
    """A warning when ``cfg`` is far too short for its learning rate to change the model (or None)."""
    budget = cfg.learning_rate * cfg.max_steps
    if budget >= SHORT_RUN_BUDGET:
        return None
    cpu_rate = cfg.CPU_RATE  # measured to work for short CPU runs (settings.py)
    if cfg.learning_rate < float(cpu_rate):
        fix = f"raise the rate (e.g. --set {stage}.learning_rate={cpu_rate})"
    else:  # already at the measured CPU rate: suggesting it again would be no advice
        fix = f"run more steps (about {math.ceil(SHORT_RUN_BUDGET / cfg.learning_rate)} at this rate)"
    return (
        f"{stage}: {cfg.max_steps} steps at learning rate {cfg.learning_rate:g} will barely change the model "
        f"(learning rate x steps = {budget:.2g}; the paper's recipes assume about 1000 steps). For short CPU "
        f"runs {fix} or see BENCHMARKS.md for CPU budgets"
    )


def _float_settings(cfg, prefix: str = "") -> list[tuple[str, float]]:
    """Every float setting of a (nested) stage config as ``(dotted key, value)``, list items included:
    one place to refuse NaN and infinity, whichever way (recipe, ``--set``, flag) a value arrived."""
    found = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            found += _float_settings(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            found.append((f"{prefix}{f.name}", value))
        elif isinstance(value, list | tuple):
            found += [(f"{prefix}{f.name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, float)]
    return found


def check_stage(cfg: StageConfig, stage: str) -> None:
    """Reject impossible settings before any model is loaded or anything is written; warn about
    settings that are possible but will not do what the user expects (see :func:`short_run_warning`)."""

    def bad(key: str, value: Any, need: str) -> SettingError:
        return SettingError(f"{stage}.{key} = {value!r}: {need}")

    for key, value in _float_settings(cfg):  # first: NaN passes every `<` / `>` test below
        if not math.isfinite(value):
            raise bad(key, value, "must be a finite number")
    for key in ("max_steps", "batch_size", "max_seq_length", "log_every", "save_every"):
        value = getattr(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(key, value, "must be a positive integer")
    if cfg.max_seq_length < 8:
        raise bad("max_seq_length", cfg.max_seq_length, "must be at least 8 tokens")
    if not cfg.learning_rate > 0:
        raise bad("learning_rate", cfg.learning_rate, "must be positive")
    if cfg.warmup_steps < 0 or cfg.weight_decay < 0 or cfg.max_grad_norm < 0:
        raise bad("warmup_steps/weight_decay/max_grad_norm", None, "must not be negative")
    if cfg.keep_checkpoints < 1:
        raise bad("keep_checkpoints", cfg.keep_checkpoints, "must be at least 1")
    if not isinstance(cfg.eval_every, int) or isinstance(cfg.eval_every, bool) or cfg.eval_every < 0:
        raise bad("eval_every", cfg.eval_every, "must be a non-negative integer (0: only at the end)")
    for key in ("retrieval_dev_max_queries", "retrieval_dev_max_docs"):
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise bad(key, value, "must be a positive integer (or null: all)")
    if cfg.retrieval_dev:
        from decoder2vec.evaluation.metrics import RETRIEVAL_METRICS

        if cfg.select_metric not in RETRIEVAL_METRICS:
            raise bad("select_metric", cfg.select_metric, f"must be one of {', '.join(RETRIEVAL_METRICS)}")
    if cfg.lora.r < 1 or cfg.lora.alpha <= 0 or not 0 <= cfg.lora.dropout < 1:
        raise bad("lora", cfg.lora, "needs r >= 1, alpha > 0 and 0 <= dropout < 1")
    if cfg.dtype not in (None, "float32", "bfloat16", "float16"):
        raise bad("dtype", cfg.dtype, "must be float32, bfloat16 or float16")
    if isinstance(cfg, MNTPConfig):
        if cfg.mask_strategy not in ("bert", "all_mask"):
            raise bad("mask_strategy", cfg.mask_strategy, "must be bert or all_mask")
        if cfg.mask_probability is not None and not 0 < cfg.mask_probability < 1:
            raise bad("mask_probability", cfg.mask_probability, "must be between 0 and 1 (exclusive)")
        if cfg.mask_token not in ("blank", "eos", "pad", "new"):
            raise bad("mask_token", cfg.mask_token, "must be blank, eos, pad or new")
        if not 0 <= cfg.eval_fraction < 1:
            raise bad("eval_fraction", cfg.eval_fraction, "must be in [0, 1)")
    if isinstance(cfg, ContrastiveConfig):
        from decoder2vec.encoding.pooling import POOLING_MODES

        if cfg.pooling not in POOLING_MODES and not (cfg.pooling is None and isinstance(cfg, DistillConfig)):
            raise bad("pooling", cfg.pooling, f"must be one of {', '.join(POOLING_MODES)}")
        if cfg.mini_batch_size is not None and cfg.mini_batch_size < 1:
            raise bad("mini_batch_size", cfg.mini_batch_size, "must be a positive integer")
        if not cfg.temperature > 0:
            raise bad("temperature", cfg.temperature, "must be positive")
        dims = cfg.matryoshka_dims
        if any(d < 1 for d in dims) or len(set(dims)) != len(dims):
            raise bad("matryoshka_dims", dims, "must be distinct positive integers, e.g. [576, 256, 128, 64]")
        weights = cfg.matryoshka_weights
        if weights and (len(weights) != len(dims) or any(not w > 0 for w in weights)):
            raise bad(
                "matryoshka_weights",
                weights,
                f"must be one positive weight per matryoshka_dims entry ({len(dims)}), e.g. [4, 1, 1, 1]",
            )
    if isinstance(cfg, SimCSEConfig) and not 0 <= cfg.attention_dropout < 1:
        raise bad("attention_dropout", cfg.attention_dropout, "must be in [0, 1)")
    if isinstance(cfg, SupervisedConfig) and cfg.num_negatives < 0:
        raise bad("num_negatives", cfg.num_negatives, "must not be negative")
    if isinstance(cfg, DistillConfig):
        if cfg.distill_loss not in ("cosine", "mse"):
            raise bad("distill_loss", cfg.distill_loss, "must be cosine or mse")
        if cfg.student_layers is not None and cfg.student_layers < 1:
            raise bad(
                "student_layers", cfg.student_layers, "must be a positive number of layers (or null: all)"
            )
        if cfg.embedding_weight < 0 or cfg.similarity_weight < 0:
            raise bad("embedding_weight/similarity_weight", None, "must not be negative")
        if cfg.embedding_weight == 0 and cfg.similarity_weight == 0:
            raise bad(
                "embedding_weight/similarity_weight", 0, "one of the two loss terms needs a positive weight"
            )
    if message := short_run_warning(cfg, stage):
        warnings.warn(message, stacklevel=3)
