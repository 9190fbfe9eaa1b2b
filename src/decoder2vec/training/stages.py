"""The stage registry, :data:`STAGES`, and :func:`run_stage`, the one way to train a stage.

:data:`STAGES` is the one list of stages: the pipeline settings (``settings.PipelineConfig``), recipe files,
``convert`` and its input checks, and the ``train`` commands (their flags: ``cli.STAGE_FLAGS``) are all read
from it, so a new stage is a settings class, a recipe module, one entry here and its flags in ``cli.py``.

The recipes import torch, peft and transformers, so an entry names them through a function that imports
them when a stage runs; nothing here loads them on import. The recipes never import this module (they
import ``settings`` and ``checks``), so the registry sits above them and no import goes round in a circle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decoder2vec.training.errors import SettingError
from decoder2vec.training.settings import (
    DistillConfig,
    MNTPConfig,
    SimCSEConfig,
    StageConfig,
    SupervisedConfig,
)


@dataclass(frozen=True)
class StageSpec:
    """Everything the package knows about one training stage, but its command-line flags (``cli.py``)."""

    name: str
    config: type[StageConfig]  # the settings dataclass
    recipe: Callable[[], type]  # () -> the stage's Recipe class (recipes/common.py), imported on first use
    # (cfg, pipeline | None) -> None: read the data and check what can be checked before any model loads
    check_inputs: Callable[[Any, Any], None]
    in_default_pipeline: bool = True
    optional: bool = False  # convert skips the stage (and records why) when it has no data
    # convert: True, the stage trains the pipeline's model with the previous stages' adapters merged in;
    # False, it turns the encoder made so far into another model and must come last (distill).
    continues_pipeline: bool = True


def run_stage(
    stage: str | StageSpec,
    cfg: StageConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Callable[[int], None]] = (),
):
    """Train one stage (a name in :data:`STAGES` or its entry) with the settings ``cfg`` into ``out_dir``,
    and return its ``StageResult`` (``recipes/common.py``).

    ``out_dir`` gets the run (``run.json``, ``metrics.jsonl``, checkpoints) and the outputs: ``adapter/``,
    and with ``cfg.merge`` the merged model (MNTP's ``merged/``) or the encoder (``encoder/``; distill
    always writes its student there). ``resume`` continues the run in ``out_dir`` from its newest
    checkpoint, ``overwrite`` replaces a previous run there, and each callback is called with the number of
    every step that ends.
    """
    spec = stage if isinstance(stage, StageSpec) else stage_spec(stage)
    if not isinstance(cfg, spec.config):
        raise TypeError(f"stage {spec.name} takes a {spec.config.__name__}, got a {type(cfg).__name__}")
    recipe = spec.recipe()(cfg)
    return recipe.run(out_dir, resume=resume, overwrite=overwrite, callbacks=callbacks)


def stage_spec(name: str) -> StageSpec:
    """The registry entry of stage ``name``; an unknown name is a settings error naming the stages."""
    if name not in STAGES:
        raise SettingError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    return STAGES[name]


# ---------------------------------------------------------------- the recipes, imported when a stage runs
def _mntp_recipe():
    from decoder2vec.training.recipes.mntp import MNTPRecipe

    return MNTPRecipe


def _simcse_recipe():
    from decoder2vec.training.recipes.simcse import SimCSERecipe

    return SimCSERecipe


def _supervised_recipe():
    from decoder2vec.training.recipes.supervised import SupervisedRecipe

    return SupervisedRecipe


def _distill_recipe():
    from decoder2vec.training.recipes.distill import DistillRecipe

    return DistillRecipe


# ----------------------------------------------------------------------- the input checks (no model loads)
def _check_texts(cfg: StageConfig, pipeline=None) -> None:
    from decoder2vec.training.data.corpus import read_texts

    read_texts(cfg.data, cfg.text_field)


def _check_sentences(cfg: SimCSEConfig, pipeline=None) -> None:
    from decoder2vec.training.data.corpus import read_sentences

    read_sentences(cfg.data, cfg.text_field, cfg.min_words)


def _check_pairs(cfg: SupervisedConfig, pipeline=None) -> None:
    from decoder2vec.training.data.pairs import read_pairs

    read_pairs(cfg.data, cfg.num_negatives, tuple(cfg.symmetric_tasks))


def _check_distill(cfg: DistillConfig, pipeline=None) -> None:
    from decoder2vec.training.recipes.distill import check_inputs

    check_inputs(cfg, pipeline)


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec("mntp", MNTPConfig, _mntp_recipe, _check_texts),
        StageSpec("simcse", SimCSEConfig, _simcse_recipe, _check_sentences),
        StageSpec("supervised", SupervisedConfig, _supervised_recipe, _check_pairs, optional=True),
        StageSpec(
            "distill",
            DistillConfig,
            _distill_recipe,
            _check_distill,
            in_default_pipeline=False,
            continues_pipeline=False,
        ),
    )
}
