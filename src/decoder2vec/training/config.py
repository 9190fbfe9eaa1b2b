"""Stage and pipeline configuration: dataclasses with the paper's defaults, loadable from YAML recipes."""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decoder2vec.training.errors import SettingError, TrainingError


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # LoRA only in the last N decoder layers (None: all). The backward pass then stops at the first
    # adapted layer, so a step costs less: a speed lever for CPU budgets.
    top_layers: int | None = None


@dataclass
class StageConfig:
    """Knobs every stage shares. ``model`` is a folder, GGUF, alias or hub id; ``adapters`` are LoRA folders
    merged into it (in order) before this stage adds its own fresh LoRA."""

    model: str = "smollm2-135m"
    adapters: list[str] = field(default_factory=list)
    data: str = "wiki"
    text_field: str = "text"
    max_seq_length: int = 512
    batch_size: int = 32  # per process; the global batch is batch_size x world size
    max_steps: int = 1000
    learning_rate: float = 5e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora: LoraSettings = field(default_factory=LoraSettings)
    seed: int = 42
    log_every: int = 10
    save_every: int = 200
    keep_checkpoints: int = 2
    gradient_checkpointing: bool | None = None  # None: on for GPU, off for CPU
    dtype: str | None = None  # None: bf16 autocast on GPUs that have it, fp32 on CPU
    merge: bool = True  # also write the base model with this stage's adapter merged in


@dataclass
class MNTPConfig(StageConfig):
    mask_strategy: str = "bert"  # bert (80/10/10) or all_mask
    mask_probability: float | None = None  # None: 0.2 for bert, 0.8 for all_mask
    mask_token: str = "blank"  # blank ('_'), eos, pad or new (<mask>)
    eval_fraction: float = 0.01
    eval_every: int = 100
    eval_batches: int = 8


@dataclass
class ContrastiveConfig(StageConfig):
    pooling: str = "mean"
    mini_batch_size: int | None = None  # GradCache micro-batch; None embeds the whole batch at once


@dataclass
class SimCSEConfig(ContrastiveConfig):
    max_seq_length: int = 128
    batch_size: int = 128
    learning_rate: float = 3e-5
    temperature: float = 0.05
    attention_dropout: float = 0.3
    min_words: int = 4


@dataclass
class SupervisedConfig(ContrastiveConfig):
    data: str = ""
    max_seq_length: int = 512
    batch_size: int = 64
    learning_rate: float = 2e-4
    warmup_steps: int = 300
    temperature: float = 0.02
    num_negatives: int = 1
    symmetric_tasks: list[str] = field(default_factory=list)
    filter_false_negatives: bool = True


@dataclass
class PipelineConfig:
    """``convert``: bidirectional -> MNTP -> SimCSE (-> supervised when it has data); each stage starts from
    the previous enabled stage's merged weights."""

    model: str = "smollm2-135m"
    pooling: str = "mean"
    mntp: MNTPConfig = field(default_factory=MNTPConfig)
    simcse: SimCSEConfig = field(default_factory=SimCSEConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    stages: list[str] = field(default_factory=lambda: ["mntp", "simcse", "supervised"])


def _type_ok(value: Any, annotation: Any) -> bool:
    """Does ``value`` fit ``annotation`` (int, float, str, bool, X | None, list[str])? YAML gives the
    plain types; an int is accepted for a float, a bool is never taken for a number."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if annotation is Any:
        return True
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def from_dict(cls, data: dict[str, Any] | None, where: str = "recipe"):
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses.

    Unknown keys and values of the wrong type (``max_steps: "10"``) are errors naming the key and ``where``
    (the recipe file)."""
    data = dict(data or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise SettingError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(names)})")
    kwargs = {}
    for key, value in data.items():
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise SettingError(f"{where}: {key} must be a mapping, got {value!r}")
            value = from_dict(annotation, value, f"{where}.{key}")
        elif not _type_ok(value, annotation):
            raise SettingError(
                f"{where}: {key} must be {_type_name(annotation)}, got {type(value).__name__} {value!r}"
            )
        elif annotation is float or (typing.get_origin(annotation) and float in typing.get_args(annotation)):
            value = float(value) if isinstance(value, int) else value
        kwargs[key] = value
    return cls(**kwargs)


def apply_overrides(cfg, assignments: list[str] | None, prefix: str | None = None):
    """Apply ``--set key=value`` overrides (``mntp.max_steps=5``, ``lora.r=8``) to ``cfg`` in place.

    Values are parsed as YAML scalars and type-checked like recipe values, so a flag can never hold
    what a recipe could not. ``prefix`` (a stage name) may be left out of a stage command's keys.
    """
    for assignment in assignments or ():
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise SettingError(f"--set {assignment!r}: expected KEY=VALUE, e.g. mntp.max_steps=5")
        path = key.strip().split(".")
        if prefix is not None and path[0] == prefix and len(path) > 1:
            path = path[1:]
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        target = cfg
        for name in path[:-1]:
            if not dataclasses.is_dataclass(target) or not hasattr(target, name):
                raise SettingError(f"--set {assignment!r}: no setting {key.strip()!r}")
            target = getattr(target, name)
        if not dataclasses.is_dataclass(target):
            raise SettingError(f"--set {assignment!r}: no setting {key.strip()!r}")
        # YAML reads "3e-3" as a string and "123" as a number; also try the float and the raw text, so
        # `--set simcse.learning_rate=3e-3` and `--set mntp.data=123` mean what they say.
        candidates = [value]
        try:
            candidates.append(float(text))
        except ValueError:
            pass
        candidates.append(text)
        error = None
        for candidate in candidates:
            try:
                checked = from_dict(type(target), {path[-1]: candidate}, f"--set {key.strip()}")
            except SettingError as exc:
                error = error or exc
                continue
            setattr(target, path[-1], getattr(checked, path[-1]))
            break
        else:
            raise error
    return cfg


# Learning rate x steps below which a LoRA stage barely moves the model. The paper's stages sit at
# 0.03-0.05 (e.g. SimCSE 3e-5 x 1000 steps of batch 128); 40 steps at the paper's rates give 0.001.
SHORT_RUN_BUDGET = 0.01
# Rates measured to work for short CPU runs (BENCHMARKS.md: the SimCSE sweep and the cpu-1h budget).
CPU_RATES = {"mntp": "3e-4", "simcse": "3e-3"}


def short_run_warning(cfg: StageConfig, stage: str) -> str | None:
    """A warning when ``cfg`` is far too short for its learning rate to change the model (or None)."""
    budget = cfg.learning_rate * cfg.max_steps
    if budget >= SHORT_RUN_BUDGET:
        return None
    return (
        f"{stage}: {cfg.max_steps} steps at learning rate {cfg.learning_rate:g} will barely change the model "
        f"(learning rate x steps = {budget:.2g}; the paper's recipes assume about 1000 steps). For short CPU "
        f"runs raise the rate (e.g. --set {stage}.learning_rate={CPU_RATES.get(stage, '1e-3')}) or see "
        "BENCHMARKS.md for CPU budgets"
    )


def check_stage(cfg: StageConfig, stage: str) -> None:
    """Reject impossible settings before any model is loaded or anything is written; warn about
    settings that are possible but will not do what the user expects (see :func:`short_run_warning`)."""

    def bad(key: str, value: Any, need: str) -> SettingError:
        return SettingError(f"{stage}.{key} = {value!r}: {need}")

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

        if cfg.pooling not in POOLING_MODES:
            raise bad("pooling", cfg.pooling, f"must be one of {', '.join(POOLING_MODES)}")
        if cfg.mini_batch_size is not None and cfg.mini_batch_size < 1:
            raise bad("mini_batch_size", cfg.mini_batch_size, "must be a positive integer")
        if not cfg.temperature > 0:
            raise bad("temperature", cfg.temperature, "must be positive")
    if isinstance(cfg, SimCSEConfig) and not 0 <= cfg.attention_dropout < 1:
        raise bad("attention_dropout", cfg.attention_dropout, "must be in [0, 1)")
    if isinstance(cfg, SupervisedConfig) and cfg.num_negatives < 0:
        raise bad("num_negatives", cfg.num_negatives, "must not be negative")
    if message := short_run_warning(cfg, stage):
        warnings.warn(message, stacklevel=3)


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


RECIPE_DIR = Path(__file__).resolve().parent.parent / "resources" / "recipes"


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file path, or the name of a shipped recipe (``llm2vec-llama`` -> resources/recipes/...)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = RECIPE_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
    raise TrainingError(f"no recipe file {name_or_path!r}; shipped recipes: {', '.join(names)}")


def load_pipeline(name_or_path: str | Path | None) -> PipelineConfig:
    """Read a pipeline recipe; top-level ``model`` fills in every stage that does not name its own."""
    raw = {} if name_or_path is None else yaml.safe_load(recipe_path(name_or_path).read_text()) or {}
    if not isinstance(raw, dict):
        raise SettingError(f"recipe {name_or_path} must be a YAML mapping")
    raw = dict(raw)
    raw.pop("description", None)
    cfg = from_dict(PipelineConfig, raw, str(name_or_path))
    for stage in (cfg.mntp, cfg.simcse, cfg.supervised):
        stage.model = cfg.model
    for stage in (cfg.simcse, cfg.supervised):
        stage.pooling = cfg.pooling
    return cfg


def load_stage(cls, name_or_path: str | Path | None, stage: str):
    """Read one stage's settings from a recipe file: its ``<stage>:`` section (or the whole file if flat)."""
    if name_or_path is None:
        return cls()
    raw = yaml.safe_load(recipe_path(name_or_path).read_text()) or {}
    section = dict(raw[stage]) if stage in raw else dict(raw)
    for key in ("description", "stages", "mntp", "simcse", "supervised"):
        section.pop(key, None)
    if "model" in raw and "model" not in section:
        section["model"] = raw["model"]
    if stage != "mntp" and "pooling" in raw and "pooling" not in section:
        section["pooling"] = raw["pooling"]
    return from_dict(cls, section, f"{name_or_path}:{stage}")
