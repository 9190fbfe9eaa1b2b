"""Training: MNTP, unsupervised SimCSE and supervised contrastive learning (LLM2Vec stages 2 and 3), and
distillation into smaller students.

Components (math, data, loop) live in this package's modules; the stage recipes that wire them to a
backbone live in ``decoder2vec.training.recipes``; ``config.STAGES`` lists the stages (``run_<stage>`` here).
"""

from decoder2vec.training.config import (
    STAGES,
    ContrastiveConfig,
    DistillConfig,
    LoraSettings,
    MNTPConfig,
    PipelineConfig,
    SimCSEConfig,
    StageConfig,
    SupervisedConfig,
)
from decoder2vec.training.errors import (
    BatchSizeError,
    CorpusError,
    MissingColumnError,
    OutputExistsError,
    ResumeMismatchError,
    TrainingError,
)

__all__ = [
    "STAGES",
    "BatchSizeError",
    "ContrastiveConfig",
    "CorpusError",
    "DistillConfig",
    "LoraSettings",
    "MNTPConfig",
    "MissingColumnError",
    "OutputExistsError",
    "PipelineConfig",
    "ResumeMismatchError",
    "SimCSEConfig",
    "StageConfig",
    "SupervisedConfig",
    "TrainingError",
    "convert",
]
__all__ += [f"run_{name}" for name in STAGES]  # (loaded on first use, below)


def __getattr__(name: str):
    # The recipes import torch, peft and transformers: load them on first use, not with the package.
    if name == "convert":
        from decoder2vec.training.recipes.pipeline import convert

        return convert
    if name.startswith("run_") and name[4:] in STAGES:
        import importlib

        module, _, function = STAGES[name[4:]].runner.partition(":")
        return getattr(importlib.import_module(module), function)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
