"""Stage and pipeline configuration: dataclasses with the paper's defaults, loadable from YAML recipes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decoder2vec.training.errors import TrainingError


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05


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


def from_dict(cls, data: dict[str, Any] | None, where: str = "recipe"):
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses; unknown keys are errors."""
    data = dict(data or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise TrainingError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(names)})")
    kwargs = {}
    for key, value in data.items():
        default = (
            names[key].default_factory() if names[key].default_factory is not dataclasses.MISSING else None
        )
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = from_dict(type(default), value, f"{where}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


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
        raise TrainingError(f"recipe {name_or_path} must be a YAML mapping")
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
