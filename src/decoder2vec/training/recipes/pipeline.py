"""``convert``: the whole LLM2Vec recipe in one call.

bidirectional -> MNTP -> SimCSE (-> supervised when it has data), each stage training a fresh LoRA on
top of the base with all previous adapters merged in. Stage runs live in ``OUT/stages/<stage>/`` (so
``resume`` continues any of them); the result is a ready encoder folder::

    OUT/  model.safetensors, config.json, tokenizer files, sentence-transformers files (Encoder.save)
          adapters/<stage>/   the LoRA adapter of each stage, in the order applied
          recipe.json         recipe, data and final metrics of every stage
          stages/<stage>/     the training runs (checkpoints, metrics.jsonl)
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from decoder2vec.encoding.encoder import _written_by_save
from decoder2vec.io import replace_entries
from decoder2vec.training.checkpoint import RUN_FILE
from decoder2vec.training.config import PipelineConfig, to_dict
from decoder2vec.training.errors import OutputExistsError, TrainingError
from decoder2vec.training.recipes.mntp import run_mntp
from decoder2vec.training.recipes.simcse import run_simcse
from decoder2vec.training.recipes.supervised import run_supervised

log = logging.getLogger(__name__)
RUNNERS = {"mntp": run_mntp, "simcse": run_simcse, "supervised": run_supervised}
RECORD = "recipe.json"


def _is_ours(out: Path) -> bool:
    """A folder convert wrote: its record, or at least one stage run with its run file."""
    return (out / RECORD).is_file() or any((out / "stages").glob(f"*/{RUN_FILE}"))


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
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
    from decoder2vec.training.data.corpus import read_sentences, read_texts
    from decoder2vec.training.data.pairs import read_pairs

    check_pooling_mode(cfg.pooling)
    for name in cfg.stages:
        stage_cfg = getattr(cfg, name)
        if name == "supervised" and not stage_cfg.data:
            continue  # skipped, and recorded as such
        check_stage(stage_cfg, name)
        if name == "mntp":
            read_texts(stage_cfg.data, stage_cfg.text_field)
        elif name == "simcse":
            read_sentences(stage_cfg.data, stage_cfg.text_field, stage_cfg.min_words)
        else:
            read_pairs(stage_cfg.data, stage_cfg.num_negatives, tuple(stage_cfg.symmetric_tasks))


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
    from decoder2vec.backbone.loading import load_backbone
    from decoder2vec.encoding.encoder import Encoder

    out = Path(out).expanduser()
    unknown = [s for s in cfg.stages if s not in RUNNERS]
    if unknown:
        raise TrainingError(f"unknown stage(s) {unknown}; stages are {list(RUNNERS)}")
    _check_out(out, resume, overwrite)
    check_inputs(cfg)
    state = PartialState()
    if overwrite and not resume and state.is_main_process and (out / "stages").exists():
        shutil.rmtree(out / "stages")
    state.wait_for_everyone()

    adapters: list[str] = []
    record: dict[str, Any] = {
        "decoder2vec": __version__,
        "model": cfg.model,
        "recipe_source": recipe_source,
        "stages": [],
    }
    for name in cfg.stages:
        stage_cfg = getattr(cfg, name)
        if name == "supervised" and not stage_cfg.data:
            record["stages"].append({"name": name, "skipped": "no supervised data given"})
            continue
        stage_cfg.model, stage_cfg.adapters, stage_cfg.merge = cfg.model, list(adapters), False
        log.info("convert: stage %s on %s with %d adapter(s)", name, cfg.model, len(adapters))
        run_dir = out / "stages" / name
        start = time.perf_counter()
        # --resume continues the stages that started; the ones that did not start begin fresh
        result = RUNNERS[name](stage_cfg, run_dir, resume=resume and (run_dir / RUN_FILE).is_file())
        adapters.append(str(result.adapter))
        record["stages"].append(
            {
                "name": name,
                "data": stage_cfg.data,
                "adapter": f"adapters/{name}",
                "config": to_dict(stage_cfg),
                "metrics": result.metrics,
                "seconds": round(time.perf_counter() - start, 1),  # this invocation's wall time
            }
        )
    record["recipe"] = to_dict(cfg)

    if state.is_main_process:
        model, tokenizer = load_backbone(
            cfg.model, bidirectional=True, adapters=adapters or None, dtype="float32", device="cpu"
        )
        encoder = Encoder(model, tokenizer, pooling=cfg.pooling)
        _publish(out, encoder, adapters, record)
    state.wait_for_everyone()
    return out


def _publish(out: Path, encoder, adapters: list[str], record: dict[str, Any]) -> None:
    """Write the encoder files, ``adapters/`` and ``recipe.json`` into ``out`` (each renamed into place).

    Only what convert writes is replaced: ``stages/`` stays where it is, and files the user added to the
    folder (a README, a reports/ folder) are left alone.
    """

    def build(tmp: Path) -> None:
        encoder._write(tmp)
        for adapter in adapters:
            shutil.copytree(adapter, tmp / "adapters" / Path(adapter).parent.name)
        (tmp / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")

    replace_entries(out, build, owned=lambda name: name == "adapters" or _written_by_save(name))
