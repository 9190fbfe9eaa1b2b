"""The training configuration's names in one place, for callers that import them from here.

Each lives in its own module: the settings dataclasses in ``settings.py``, what values are possible in
``checks.py``, the stage registry and ``run_stage`` in ``stages.py``, recipe files and ``--set`` in
``loading.py``, and the command-line flags in ``cli.py``. Code inside the package imports those modules.
"""

from decoder2vec.training.checks import SHORT_RUN_BUDGET, check_stage, short_run_warning
from decoder2vec.training.loading import (
    RECIPE_DIR,
    RETRIEVAL_RECIPE,
    apply_overrides,
    from_dict,
    load_pipeline,
    load_stage,
    recipe_path,
    with_corpus,
)
from decoder2vec.training.settings import (
    SELECTION_KEYS,
    ContrastiveConfig,
    DistillConfig,
    LoraSettings,
    MNTPConfig,
    PairsConfig,
    PipelineConfig,
    SimCSEConfig,
    StageConfig,
    SupervisedConfig,
    to_dict,
)
from decoder2vec.training.stages import STAGES, StageSpec, run_stage

# Rates measured to work for short CPU runs (each settings class's CPU_RATE).
CPU_RATES = {name: spec.config.CPU_RATE for name, spec in STAGES.items()}

__all__ = [
    "CPU_RATES",
    "RECIPE_DIR",
    "RETRIEVAL_RECIPE",
    "SELECTION_KEYS",
    "SHORT_RUN_BUDGET",
    "STAGES",
    "ContrastiveConfig",
    "DistillConfig",
    "LoraSettings",
    "MNTPConfig",
    "PairsConfig",
    "PipelineConfig",
    "SimCSEConfig",
    "StageConfig",
    "StageSpec",
    "SupervisedConfig",
    "apply_overrides",
    "check_stage",
    "from_dict",
    "load_pipeline",
    "load_stage",
    "recipe_path",
    "run_stage",
    "short_run_warning",
    "to_dict",
    "with_corpus",
]
