"""Training: MNTP, unsupervised SimCSE and supervised contrastive learning (LLM2Vec stages 2 and 3), and
distillation into smaller students.

Components (math, data, loop) live in this package's modules; the stage recipes that wire them to a
backbone live in ``decoder2vec.training.recipes``; ``stages.STAGES`` lists the stages, and ``run_stage`` trains
any of them (``run_<stage>`` here is ``run_stage("<stage>", ...)``).
"""

import functools

from decoder2vec.training.errors import (
    BatchSizeError,
    CorpusError,
    MissingColumnError,
    OutputExistsError,
    ResumeMismatchError,
    TrainingError,
)
from decoder2vec.training.settings import (
    ContrastiveConfig,
    DistillConfig,
    LoraSettings,
    MNTPConfig,
    PipelineConfig,
    SimCSEConfig,
    StageConfig,
    SupervisedConfig,
)
from decoder2vec.training.stages import STAGES, run_stage

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
    "run_stage",
]
__all__ += [f"run_{name}" for name in STAGES]  # (aliases of run_stage, below)


def __getattr__(name: str):
    # The recipes import torch, peft and transformers: load them on first use, not with the package.
    if name == "convert":
        from decoder2vec.training.pipeline import convert

        return convert
    if name.startswith("run_") and name[4:] in STAGES:  # run_mntp(cfg, out_dir, ...): run_stage("mntp", ...)
        runner = globals()[name] = functools.partial(run_stage, name[4:])
        return runner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
