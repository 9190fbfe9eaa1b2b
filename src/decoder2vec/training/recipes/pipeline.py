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
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from decoder2vec.training.config import PipelineConfig, to_dict
from decoder2vec.training.errors import OutputExistsError, TrainingError
from decoder2vec.training.recipes.mntp import run_mntp
from decoder2vec.training.recipes.simcse import run_simcse
from decoder2vec.training.recipes.supervised import run_supervised

log = logging.getLogger(__name__)
RUNNERS = {"mntp": run_mntp, "simcse": run_simcse, "supervised": run_supervised}
RECORD = "recipe.json"


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    if not out.exists() or not any(out.iterdir()):
        return
    ours = (out / RECORD).is_file() or (out / "stages").is_dir()
    if not ours:
        raise OutputExistsError(f"{out} is not empty and was not written by convert; choose another folder")
    if not (resume or overwrite):
        raise OutputExistsError(
            f"{out} already holds a conversion; pass --resume to continue it or --overwrite to redo it"
        )


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
        result = RUNNERS[name](stage_cfg, out / "stages" / name, resume=resume)
        adapters.append(str(result.adapter))
        record["stages"].append(
            {
                "name": name,
                "data": stage_cfg.data,
                "adapter": f"adapters/{name}",
                "config": to_dict(stage_cfg),
                "metrics": result.metrics,
            }
        )
    record["recipe"] = to_dict(cfg)

    if state.is_main_process:
        model, tokenizer = load_backbone(
            cfg.model, bidirectional=True, adapters=adapters or None, dtype="float32", device="cpu"
        )
        encoder = Encoder(model, tokenizer, pooling=cfg.pooling, max_length=512)
        _publish(out, encoder, adapters, record)
    state.wait_for_everyone()
    return out


def _publish(out: Path, encoder, adapters: list[str], record: dict[str, Any]) -> None:
    """Assemble the final folder beside ``out`` and swap it in, carrying the stage runs along."""
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.convert-", dir=out.parent))
    try:
        folder = encoder.save(tmp_root / "encoder")
        for adapter in adapters:
            shutil.copytree(adapter, folder / "adapters" / Path(adapter).parent.name)
        (folder / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
        if (out / "stages").exists():
            os.replace(out / "stages", folder / "stages")
        if out.exists():
            os.replace(out, tmp_root / "previous")
        os.replace(folder, out)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
