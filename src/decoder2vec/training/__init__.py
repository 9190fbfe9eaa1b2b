"""Training: MNTP, unsupervised SimCSE and supervised contrastive learning (LLM2Vec stages 2 and 3).

Components (math, data, loop) live in this package's modules; the stage recipes that wire them to a
backbone live in ``decoder2vec.training.recipes``.
"""

from decoder2vec.training.config import (
    ContrastiveConfig,
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
    "BatchSizeError",
    "ContrastiveConfig",
    "CorpusError",
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
    "run_mntp",
    "run_simcse",
    "run_supervised",
]


def __getattr__(name: str):
    # The recipes import torch, peft and transformers: load them on first use, not with the package.
    if name in ("convert", "run_mntp", "run_simcse", "run_supervised"):
        from decoder2vec.training.recipes import mntp, pipeline, simcse, supervised

        return {
            "convert": pipeline.convert,
            "run_mntp": mntp.run_mntp,
            "run_simcse": simcse.run_simcse,
            "run_supervised": supervised.run_supervised,
        }[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
