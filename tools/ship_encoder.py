"""Package a `decoder2vec convert` run as the shipped default encoder, and score it once.

    python tools/ship_encoder.py RUN_DIR [--dest src/decoder2vec/resources/encoders/smollm2-135m-llm2vec]
    python tools/ship_encoder.py SIMCSE_RUN_DIR --simcse-only   # the shipped MNTP adapter + a new SimCSE stage
    python tools/ship_encoder.py DISTILL_RUN_DIR --student [--alias smollm2-135m-llm2vec-10l]   # a distilled student

RUN_DIR is what ``decoder2vec convert --config cpu-2h --out RUN_DIR`` wrote. Each stage's LoRA adapter is
cast to fp16 and copied into the bundle with ``recipe.json``: the recipe, the data, steps and wall time of
every stage, the SHA-256 of every file, and the scores of the encoder *as built from the fp16 bundle*
(``default_encoder_folder``): STS-B dev and SICK trial (the sets choices are made on) and, reported once,
STS-B test and SICK-R test, Spearman x100 of cosine similarity with mean pooling, from ../shared/data.
The Matryoshka dimensions of the run's contrastive stages are recorded, and the int8 calibration sample is
made from the encoder as built (1,000 sentences of its SimCSE corpus, stored as float16).

With ``--student``, RUN_DIR is a ``train distill`` run of a LoRA student cut from a shipped encoder
(``adapter/``, ``encoder/`` with its projection and ``recipe.json``): the bundle holds the student's fp16
LoRA, the projection (float32, as trained) and ``"base"`` + ``"layers"``, from which the alias is rebuilt
as the teacher cut to those layers with the LoRA merged.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from common import SHARED, sts_spearman

from decoder2vec.backbone.default_encoder import (
    ADAPTER_FILES,
    ENCODER_ALIAS,
    MANIFEST,
    default_encoder_folder,
    sha256,
    shipped_dir,
)
from decoder2vec.backbone.default_model import DISTILLED_ENCODER, SHIPPED_ENCODERS
from decoder2vec.evaluation.loaders import load_sick, load_stsb

CALIBRATION = "calibration.npy"
# Written into every bundle this tool makes: the only folders it will replace (a saved encoder has a
# recipe.json too, and the tool must never wipe a user's folder holding it).
MARKER = "made-by-ship_encoder.txt"
ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

SETS = {
    "dev": {
        "STS-B dev": ("stsbenchmark/sts-dev.csv", load_stsb),
        "SICK trial": ("sick2014/SICK_trial.txt", load_sick),
    },
    "test": {
        "STS-B test": ("stsbenchmark/sts-test.csv", load_stsb),
        "SICK-R test": ("sick2014/SICK_test_annotated.txt", load_sick),
    },
}


def write_bundle(run: Path, dest: Path) -> dict:
    record = json.loads((run / "recipe.json").read_text())
    stages = [s for s in record["stages"] if "adapter" in s]
    manifest = {
        "alias": ENCODER_ALIAS,
        "base": record["model"],
        "made_by": f"decoder2vec convert --config {record.get('recipe_source')}",
        "decoder2vec": record.get("decoder2vec"),
        "encoder": {"pooling": record["recipe"]["pooling"], "max_length": 512},
        "adapters": [],
        "stages": [],
    }
    for stage in stages:
        manifest["adapters"].append(
            copy_adapter(run / stage["adapter"], dest / stage["name"], record["model"])
        )
        cfg = stage["config"]
        keep = ("data", "max_steps", "batch_size", "max_seq_length", "learning_rate", "warmup_steps", "lora")
        manifest["stages"].append(
            {
                "name": stage["name"],
                **{k: cfg[k] for k in keep if k in cfg},
                **{k: cfg[k] for k in ("temperature", "attention_dropout", "mask_probability") if k in cfg},
                "seconds": stage.get("seconds"),
                "final_metrics": stage.get("metrics"),
            }
        )
    manifest["train_seconds"] = sum(s.get("seconds") or 0 for s in stages)
    dims = [s["config"].get("matryoshka_dims") for s in stages if s["name"] in ("simcse", "supervised")]
    if any(dims):
        manifest["encoder"]["matryoshka_dimensions"] = sorted(next(d for d in dims[::-1] if d), reverse=True)
    return manifest


def write_restage_bundle(simcse_run: Path, dest: Path) -> tuple[dict, dict]:
    """A bundle of the shipped MNTP adapter (copied as is) and a new SimCSE stage trained on it by
    ``train simcse`` or ``bench/simcse_sweep.py`` (``simcse_run``: its adapter/ and run.json). Returns the
    manifest and the SimCSE settings (for calibration)."""
    shipped = json.loads((shipped_dir() / MANIFEST).read_text())
    run = json.loads((simcse_run / "run.json").read_text())["recipe"]
    manifest = {
        **{k: shipped[k] for k in ("alias", "base", "decoder2vec")},
        "made_by": (
            f"the shipped cpu-2h MNTP adapter, then SimCSE as trained in {simcse_run.name!r} "
            "(bench/simcse_sweep.py on that adapter; settings below)"
        ),
        "encoder": dict(shipped["encoder"]),
        "adapters": [],
        "stages": [],
    }
    mntp = next(a for a in shipped["adapters"] if a["path"] == "mntp")
    shutil.copytree(shipped_dir() / "mntp", dest / "mntp")
    manifest["adapters"].append(mntp)
    manifest["stages"].append(next(s for s in shipped["stages"] if s["name"] == "mntp"))
    manifest["adapters"].append(copy_adapter(simcse_run / "adapter", dest / "simcse", shipped["base"]))
    keep = ("data", "max_steps", "batch_size", "max_seq_length", "learning_rate", "warmup_steps", "lora")
    extra = ("temperature", "attention_dropout", "matryoshka_dims", "seed")
    manifest["stages"].append({"name": "simcse", **{k: run[k] for k in keep + extra if k in run}})
    if run.get("matryoshka_dims"):
        manifest["encoder"]["matryoshka_dimensions"] = sorted(run["matryoshka_dims"], reverse=True)
    return manifest, run


def copy_adapter(source: Path, target: Path, base: str) -> dict:
    """A LoRA adapter folder cast to fp16, its config naming ``base``; returns its manifest entry."""
    target.mkdir(parents=True, exist_ok=True)
    weights = {k: v.to(torch.float16).contiguous() for k, v in load_file(source / ADAPTER_FILES[1]).items()}
    save_file(weights, target / ADAPTER_FILES[1])
    config = json.loads((source / ADAPTER_FILES[0]).read_text())
    config["base_model_name_or_path"] = base  # not the training machine's cache path
    (target / ADAPTER_FILES[0]).write_text(json.dumps(config, indent=2) + "\n")
    return {"path": target.name, "sha256": {name: sha256(target / name) for name in ADAPTER_FILES}}


def write_student_bundle(run: Path, dest: Path, alias: str) -> dict:
    """A bundle of a distilled LoRA student (``train distill`` run ``run``) cut from a shipped encoder."""
    record = json.loads((run / "encoder" / "recipe.json").read_text())
    cfg = record["config"]
    if record.get("teacher") not in SHIPPED_ENCODERS or (run / "adapter").is_dir() is False:
        raise SystemExit(
            f"{run}: --student needs a LoRA student of a shipped encoder (teacher {record.get('teacher')!r})"
        )
    settings = json.loads((run / "encoder" / "decoder2vec_config.json").read_text())
    manifest = {
        "alias": alias,
        "base": record["teacher"],
        "layers": record["student_layers"],
        "made_by": (
            f"decoder2vec train distill --teacher {record['teacher']} --student-layers {record['student_layers']}"
            + (" --projection" if record.get("projection") else "")
        ),
        "decoder2vec": record.get("decoder2vec"),
        "encoder": {"pooling": settings["pooling"], "max_length": settings["max_length"]},
        "adapters": [copy_adapter(run / "adapter", dest / "student", record["teacher"])],
        "stages": [
            {
                "name": "distill",
                **{
                    k: cfg[k]
                    for k in (
                        "data",
                        "max_steps",
                        "batch_size",
                        "max_seq_length",
                        "learning_rate",
                        "warmup_steps",
                        "lora",
                        "distill_loss",
                        "embedding_weight",
                        "similarity_weight",
                        "temperature",
                        "seed",
                    )
                    if k in cfg
                },
                "teacher_sha256": record.get("teacher_sha256"),
                "final_metrics": record.get("metrics"),
            }
        ],
    }
    if (run / "encoder" / "2_Dense").is_dir():
        shutil.copy2(run / "encoder" / "2_Dense" / "model.safetensors", dest / "projection.safetensors")
        manifest["projection"] = {
            "path": "projection.safetensors",
            "sha256": sha256(dest / "projection.safetensors"),
        }
    return manifest


def add_calibration(bundle: Path, manifest: dict, simcse: dict) -> None:
    """Calibrate the encoder as built from the bundle on its SimCSE corpus; record the file and its hash."""
    import numpy as np

    from decoder2vec import Encoder
    from decoder2vec.training.config import SimCSEConfig, from_dict
    from decoder2vec.training.pipeline import calibration_sample

    encoder = Encoder.from_pretrained(default_encoder_folder(bundle))
    keys = ("data", "text_field", "min_words")
    encoder.calibrate(
        calibration_sample(from_dict(SimCSEConfig, {k: simcse[k] for k in keys if k in simcse}))
    )
    np.save(bundle / CALIBRATION, encoder.calibration.astype(np.float16), allow_pickle=False)
    manifest["calibration"] = {
        "path": CALIBRATION,
        "texts": len(encoder.calibration),
        "sha256": sha256(bundle / CALIBRATION),
    }


def check_alias(alias: str) -> str:
    """A bundle alias names one folder in the package's encoder folder: no separators, no ``..``."""
    if not ALIAS.fullmatch(alias) or ".." in alias:
        raise SystemExit(
            f"--alias {alias!r}: an alias is one folder name (letters, digits, '.', '_', '-'), "
            "e.g. smollm2-135m-llm2vec-10l"
        )
    return alias


def check_dest(dest: Path) -> None:
    """Only a bundle this tool wrote (its marker file) may be replaced: the new bundle replaces ``dest``
    wholesale, and a saved encoder or any other folder of the user's would be deleted with it."""
    if dest.is_symlink() or (dest.exists() and not (dest / MARKER).is_file()):
        raise SystemExit(
            f"--dest {dest} exists and is not a bundle written by this tool (no {MARKER}); "
            "choose a new folder, or remove it yourself"
        )


def check_run(run: Path, student: bool, simcse_only: bool) -> None:
    """The run folder holds what its kind of bundle is made from; checked before any work."""
    need = "encoder/recipe.json" if student else "run.json" if simcse_only else "recipe.json"
    if not run.is_dir():
        raise SystemExit(f"run folder {run} does not exist (or is not a folder)")
    if not (run / need).is_file():
        kind = "train distill" if student else "train simcse" if simcse_only else "decoder2vec convert"
        raise SystemExit(f"{run} has no {need}: it is not a finished {kind} run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a convert run, or with --simcse-only a one-stage SimCSE run")
    parser.add_argument(
        "--simcse-only",
        action="store_true",
        help="RUN is a SimCSE run on the shipped MNTP adapter: keep that adapter, replace the SimCSE one",
    )
    parser.add_argument(
        "--student", action="store_true", help="RUN is a distill run of a LoRA student of a shipped encoder"
    )
    parser.add_argument(
        "--alias", default=None, help=f"The bundle's alias (--student: default {DISTILLED_ENCODER})"
    )
    parser.add_argument("--dest", type=Path, default=None, help="Default: the alias's folder in the package")
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--no-scores", action="store_true", help="build and check only (a dry run)")
    args = parser.parse_args()
    alias = check_alias(args.alias or (DISTILLED_ENCODER if args.student else ENCODER_ALIAS))
    check_run(args.run, args.student, args.simcse_only)
    args.dest = args.dest or shipped_dir(alias)
    check_dest(args.dest)
    args.dest.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=args.dest.parent) as tmp:
        bundle = Path(tmp) / "bundle"
        if args.student:
            bundle.mkdir()
            manifest = write_student_bundle(args.run, bundle, alias)
            simcse = {"data": "wiki"}  # calibrated on the SimCSE corpus's sentences, as the teacher
        elif args.simcse_only:
            manifest, simcse = write_restage_bundle(args.run, bundle)
        else:
            manifest = write_bundle(args.run, bundle)
            simcse = json.loads((args.run / "recipe.json").read_text())["recipe"]["simcse"]
        (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        add_calibration(bundle, manifest, simcse)
        (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        from decoder2vec import Encoder

        encoder = Encoder.from_pretrained(default_encoder_folder(bundle))
        for split, sets in {} if args.no_scores else SETS.items():
            manifest[f"{split}_scores"] = {}
            for name, (file, loader) in sets.items():
                data = loader(args.data_dir / file)
                manifest[f"{split}_scores"][name] = round(sts_spearman(encoder, data), 2)
                print(f"{name:<12} {manifest[f'{split}_scores'][name]:6.2f}", flush=True)
        (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        (bundle / MARKER).write_text("A bundle written by tools/ship_encoder.py, which may replace it.\n")
        check_dest(args.dest)  # again: the scoring took minutes
        if args.dest.exists():
            shutil.rmtree(args.dest)
        bundle.rename(args.dest)
    print(f"wrote {args.dest}")


if __name__ == "__main__":
    main()
