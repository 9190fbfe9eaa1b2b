"""``convert``: the whole LLM2Vec recipe in one call.

bidirectional -> MNTP -> SimCSE (-> supervised when it has data), each stage training a fresh LoRA on
top of the base with all previous adapters merged in. Stage runs live in ``OUT/stages/<stage>/`` (so
``resume`` continues any of them); the result is a ready encoder folder::

    OUT/  model.safetensors, config.json, tokenizer files, sentence-transformers files (Encoder.save)
          adapters/<stage>/   the LoRA adapter of each stage, in the order applied
          recipe.json         recipe, data and final metrics of every stage
          stages/<stage>/     the training runs (checkpoints, metrics.jsonl)
          stages/pipeline.json  the settings the conversion started with (``--resume`` reads them)

The stages are the registry's (:data:`~decoder2vec.training.config.STAGES`). A stage that does not continue
the pipeline (``distill``) may come last: the encoder the earlier stages made (the base model with their
adapters merged, written to ``stages/teacher/``) is its teacher, and its student (by default that encoder
cut to ``distill.student_layers`` layers) is the result. ``OUT`` then holds the student, and no
``adapters/`` (the stages' adapters apply to the teacher; they stay in ``stages/<stage>/adapter``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from decoder2vec.encoder_config import is_encoder_file
from decoder2vec.io import replace_entries, write_file_atomic
from decoder2vec.training.checkpoint import RUN_FILE, identity_diff, read_record
from decoder2vec.training.config import STAGES, PipelineConfig, from_dict, to_dict
from decoder2vec.training.errors import OutputExistsError, ResumeMismatchError, SettingError, TrainingError
from decoder2vec.training.recipes.common import read_retrieval_dev

log = logging.getLogger(__name__)
RECORD = "recipe.json"
PIPELINE_RECORD = "pipeline.json"  # in OUT/stages/, written before the first stage
TEACHER = "teacher"  # OUT/stages/teacher/: the encoder a final distill stage learns from


def _is_ours(out: Path) -> bool:
    """A folder convert wrote: its record, its settings record, or a stage run with its run file."""
    return (
        (out / RECORD).is_file()
        or (out / "stages" / PIPELINE_RECORD).is_file()
        or any((out / "stages").glob(f"*/{RUN_FILE}"))
    )


def pipeline_settings(cfg: PipelineConfig) -> dict[str, Any]:
    """What a conversion depends on: its settings, with the fields convert sets itself (a continuing
    stage's model, adapters and merge) as convert sets them."""
    settings = to_dict(cfg)
    for name, spec in STAGES.items():
        if spec.continues_pipeline:
            settings[name].update(model=cfg.model, adapters=[], merge=False)
    return settings


def recorded_pipeline(out: str | Path) -> tuple[PipelineConfig, str | None] | None:
    """The settings (and recipe source) of the conversion in ``out``: those it started with
    (``stages/pipeline.json``), else a finished conversion's ``recipe.json``; None if it has neither."""
    out = Path(out).expanduser()
    for file in (out / "stages" / PIPELINE_RECORD, out / RECORD):
        if not file.is_file():
            continue
        data = read_record(file)
        if isinstance(data, dict) and isinstance(data.get("recipe"), dict):
            recipe = {k: v for k, v in data["recipe"].items() if k != "description"}
            return from_dict(PipelineConfig, recipe, str(file)), data.get("recipe_source")
    return None


def settings_diff(saved: PipelineConfig, current: PipelineConfig) -> list[str]:
    """Every setting (dotted) in which ``current`` differs from ``saved``, ignoring those that do not
    change the result (logging and checkpoint intervals) and those convert derives (a continuing stage's
    model is the pipeline's: a different ``--model`` is one difference, not one per stage)."""

    def comparable(cfg: PipelineConfig) -> dict[str, Any]:
        settings = pipeline_settings(cfg)
        for name, spec in STAGES.items():
            if spec.continues_pipeline:
                for key in ("model", "adapters", "merge"):
                    settings[name].pop(key, None)
        return settings

    return identity_diff(comparable(saved), comparable(current))


def _check_resume_settings(out: Path, cfg: PipelineConfig) -> None:
    recorded = recorded_pipeline(out)
    if recorded is None:
        return
    diffs = settings_diff(recorded[0], cfg)
    if diffs:
        raise ResumeMismatchError(
            f"{out} holds a conversion with other settings; refusing to resume (pass --resume alone to "
            "continue it with its own settings, or --overwrite to start over):\n  " + "\n  ".join(diffs)
        )


def _check_stages(cfg: PipelineConfig) -> None:
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise TrainingError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    if len(set(cfg.stages)) != len(cfg.stages):
        raise SettingError(f"stages {cfg.stages}: each stage may run once")
    for name in cfg.stages[:-1]:
        if not STAGES[name].continues_pipeline:
            raise SettingError(
                f"stages {cfg.stages}: {name} turns the encoder made so far into another model, so it must "
                "be the last stage"
            )


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file; give a folder for the encoder")
    if not out.exists() or not any(out.iterdir()):
        if resume:
            raise OutputExistsError(f"nothing to resume: {out} holds no conversion")
        return
    if not _is_ours(out):
        raise OutputExistsError(f"{out} is not empty and was not written by convert; choose another folder")
    if not (resume or overwrite):
        raise OutputExistsError(
            f"{out} already holds a conversion; pass --resume to continue it or --overwrite to redo it"
        )


def check_inputs(cfg: PipelineConfig) -> None:
    """Every stage's settings and data, checked before the first step of the first stage: a missing
    SimCSE file must not surface after a whole MNTP stage."""
    from decoder2vec.encoding.pooling import check_pooling_mode
    from decoder2vec.training.config import check_stage

    check_pooling_mode(cfg.pooling)
    _check_stages(cfg)
    for name in cfg.stages:
        spec, stage_cfg = STAGES[name], getattr(cfg, name)
        if spec.optional and not stage_cfg.data:
            continue  # skipped, and recorded as such
        check_stage(stage_cfg, name)
        spec.check_inputs(stage_cfg, cfg)
        read_retrieval_dev(stage_cfg, name)


def calibration_sample(cfg, size: int = 1000) -> list[str]:
    """Up to ``size`` sentences spread evenly over a stage's corpus: the encoder's int8 calibration sample."""
    from decoder2vec.training.data.corpus import read_sentences

    sentences = read_sentences(cfg.data, cfg.text_field, cfg.min_words)
    step = max(1, len(sentences) // size)
    return sentences[::step][:size]


def check_resume(cfg: PipelineConfig, out: Path, world_size: int) -> None:
    """Every started stage's saved settings against this run's, before the first stage resumes, so one
    error names every difference of every stage (not one stage per attempt). The stage settings are
    completed as :func:`convert` completes them (model, the earlier stages' adapters, no merge)."""
    from decoder2vec.training.checkpoint import check_resumes
    from decoder2vec.training.recipes.common import identity

    runs, adapters = [], []
    for name in cfg.stages:
        spec, stage_cfg = STAGES[name], dataclasses.replace(getattr(cfg, name))
        if (spec.optional and not stage_cfg.data) or not spec.continues_pipeline:
            continue  # (skipped; a distill run checks its own identity, teacher weights included)
        stage_cfg.model, stage_cfg.adapters, stage_cfg.merge = cfg.model, list(adapters), False
        runs.append((out / "stages" / name, identity(name, stage_cfg, world_size)))
        adapters.append(str(out / "stages" / name / "adapter"))
    check_resumes(runs)


def convert(
    cfg: PipelineConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    recipe_source: str | None = None,
) -> Path:
    """Run the pipeline and write the encoder folder ``out`` (see the module docstring)."""
    from accelerate import PartialState

    from decoder2vec import __version__

    out = Path(out).expanduser()
    _check_stages(cfg)
    _check_out(out, resume, overwrite)
    if resume:
        _check_resume_settings(out, cfg)
    check_inputs(cfg)
    state = PartialState()
    if resume:
        check_resume(cfg, out, state.num_processes)
    if overwrite and not resume and state.is_main_process and (out / "stages").exists():
        shutil.rmtree(out / "stages")
    created = not out.exists()
    if state.is_main_process:
        record_file = out / "stages" / PIPELINE_RECORD
        record_file.parent.mkdir(parents=True, exist_ok=True)
        settings = {
            "decoder2vec": __version__,
            "recipe_source": recipe_source,
            "recipe": pipeline_settings(cfg),
        }
        write_file_atomic(record_file, json.dumps(settings, indent=2, default=str) + "\n")
    state.wait_for_everyone()
    try:
        return _convert(cfg, out, state, resume=resume, recipe_source=recipe_source)
    except BaseException:
        # a conversion that fails before any stage's first checkpoint leaves nothing behind
        if state.is_main_process and not any((out / "stages").glob("*/checkpoint-*")):
            _discard(out, created)
        raise


def _discard(out: Path, created: bool) -> None:
    stages = out / "stages"
    (stages / PIPELINE_RECORD).unlink(missing_ok=True)
    for folder in (stages, out) if created else (stages,):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _convert(cfg: PipelineConfig, out: Path, state, *, resume: bool, recipe_source: str | None) -> Path:
    from decoder2vec import __version__
    from decoder2vec.backbone.loading import load_backbone
    from decoder2vec.encoding.encoder import Encoder

    adapters: list[str] = []
    student: Path | None = None  # the encoder a final distill stage made
    record: dict[str, Any] = {
        "decoder2vec": __version__,
        "model": cfg.model,
        "recipe_source": recipe_source,
        "stages": [],
    }
    for name in cfg.stages:
        spec = STAGES[name]
        stage_cfg = copy.deepcopy(getattr(cfg, name))
        if spec.optional and not stage_cfg.data:
            record["stages"].append({"name": name, "skipped": f"no {name} data given"})
            continue
        entry: dict[str, Any] = {"name": name, "data": stage_cfg.data}
        if spec.continues_pipeline:
            stage_cfg.model, stage_cfg.adapters, stage_cfg.merge = cfg.model, list(adapters), False
            log.info("convert: stage %s on %s with %d adapter(s)", name, cfg.model, len(adapters))
        else:  # the encoder made so far teaches the stage's student (by default: itself, cut)
            stage_cfg.teacher = str(_teacher(out, cfg, adapters, state))
            entry["teacher"] = f"stages/{TEACHER}"
            log.info("convert: stage %s, teacher %s", name, stage_cfg.teacher)
        run_dir = out / "stages" / name
        start = time.perf_counter()
        # --resume continues the stages that started; the ones that did not start begin fresh
        with warnings.catch_warnings():  # check_inputs already warned about a too-short stage, once
            warnings.filterwarnings("ignore", message=".*will barely change the model")
            result = spec.run(stage_cfg, run_dir, resume=resume and (run_dir / RUN_FILE).is_file())
        if spec.continues_pipeline:
            adapters.append(str(result.adapter))
            entry["adapter"] = f"adapters/{name}"
        else:
            student = result.merged
        if result.selected is not None:
            entry["selected"] = result.selected  # the outputs hold this evaluation's weights
        entry.update(
            config=to_dict(stage_cfg),
            metrics=result.metrics,
            seconds=round(time.perf_counter() - start, 1),  # this invocation's wall time
        )
        record["stages"].append(entry)
    record["recipe"] = pipeline_settings(cfg)

    if state.is_main_process:
        if student is not None:
            encoder = Encoder.from_pretrained(student, dtype="float32", device="cpu")
            record["teacher"] = f"stages/{TEACHER}"
            adapters = []  # they apply to the teacher, not to the student (see the module docstring)
        else:
            model, tokenizer = load_backbone(
                cfg.model, bidirectional=True, adapters=adapters or None, dtype="float32", device="cpu"
            )
            encoder = Encoder(model, tokenizer, pooling=cfg.pooling, matryoshka_dimensions=_matryoshka(cfg))
        if "simcse" in cfg.stages:  # int8 ranges from the corpus the encoder was trained on
            encoder.calibrate(calibration_sample(cfg.simcse))
        _publish(out, encoder, adapters, record)
    state.wait_for_everyone()
    return out


def _matryoshka(cfg: PipelineConfig) -> list[int] | None:
    """The Matryoshka dimensions of the last contrastive stage of the pipeline's model that trained any."""
    from decoder2vec.training.config import ContrastiveConfig

    stages = [getattr(cfg, name) for name in cfg.stages if STAGES[name].continues_pipeline]
    dims = [stage.matryoshka_dims for stage in stages if isinstance(stage, ContrastiveConfig)]
    return next((d for d in dims[::-1] if d), None)


def _teacher(out: Path, cfg: PipelineConfig, adapters: list[str], state) -> Path:
    """``stages/teacher/``: the encoder the stages so far made (the base with their adapters merged), written
    once; a resumed conversion keeps the one it wrote (its fingerprint is the distill run's identity)."""
    from decoder2vec.backbone.loading import load_backbone
    from decoder2vec.encoding.encoder import Encoder
    from decoder2vec.io import publish_folder

    folder = out / "stages" / TEACHER

    def build(tmp: Path) -> None:
        model, tokenizer = load_backbone(
            cfg.model, bidirectional=True, adapters=adapters or None, dtype="float32", device="cpu"
        )
        encoder = Encoder(model, tokenizer, pooling=cfg.pooling, matryoshka_dimensions=_matryoshka(cfg))
        encoder.write_files(tmp)

    if state.is_main_process:
        publish_folder(folder, build)
    state.wait_for_everyone()
    return folder


def _publish(out: Path, encoder, adapters: list[str], record: dict[str, Any]) -> None:
    """Write the encoder files, ``adapters/`` and ``recipe.json`` into ``out`` (each renamed into place).

    Only what convert writes is replaced: ``stages/`` stays where it is, and files the user added to the
    folder (a README, a reports/ folder) are left alone.
    """

    def build(tmp: Path) -> None:
        encoder.write_files(tmp)
        for adapter in adapters:
            shutil.copytree(adapter, tmp / "adapters" / Path(adapter).parent.name)
        (tmp / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")

    replace_entries(out, build, owned=lambda name: name == "adapters" or is_encoder_file(name))
