"""Atomic, resumable checkpoints.

A checkpoint folder ``checkpoint-<step>`` holds the trained (LoRA) weights, optimizer, scheduler, every
rank's RNG states, the data position and a copy of the run identity. It is written under a temporary
name and renamed into place (``os.replace``) only when complete, so a crash mid-write never leaves a
checkpoint that looks valid. ``run.json`` in the run folder records what the run is (model + recipe);
resuming with anything else is refused before a byte is written.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from decoder2vec.training.errors import OutputExistsError, ResumeMismatchError

RUN_FILE = "run.json"
STATE_FILE = "trainer_state.json"
_PREFIX = "checkpoint-"

# Settings that do not change the trained weights, so a resume may differ in them.
NON_IDENTITY_KEYS = {"log_every", "save_every", "keep_checkpoints", "eval_every", "eval_batches", "merge"}


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [p for p in run_dir.glob(f"{_PREFIX}*") if p.is_dir() and p.name[len(_PREFIX) :].isdigit()]
    return sorted((p for p in found if (p / STATE_FILE).is_file()), key=lambda p: int(p.name[len(_PREFIX) :]))


def identity_diff(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys (dotted) whose values differ, ignoring settings that do not change the weights."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if key in NON_IDENTITY_KEYS:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += identity_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} (saved) vs {b!r} (now)")
    return diffs


def check_run_dir(
    run_dir: Path, identity: dict[str, Any], *, resume: bool, overwrite: bool
) -> tuple[Path | None, bool]:
    """Decide how to start in ``run_dir`` without changing anything.

    Returns ``(checkpoint_to_resume_or_None, wipe_first)``. Raises when the folder holds another run
    (resume), or holds anything and neither ``resume`` nor ``overwrite`` was given.
    """
    run_file = run_dir / RUN_FILE
    if run_file.is_file():
        if resume:
            saved = json.loads(run_file.read_text())
            diffs = identity_diff(saved, identity)
            if diffs:
                raise ResumeMismatchError(
                    f"{run_dir} was written by a different model or recipe; refusing to resume:\n  "
                    + "\n  ".join(diffs)
                )
            found = checkpoints(run_dir)
            return (found[-1] if found else None), False
        if not overwrite:
            raise OutputExistsError(
                f"{run_dir} already holds a training run; pass --resume to continue it or --overwrite to replace it"
            )
        return None, True
    if resume:
        raise OutputExistsError(f"nothing to resume: {run_dir} holds no training run (no {RUN_FILE})")
    if run_dir.exists() and any(run_dir.iterdir()):
        # never delete a folder we did not create, even with overwrite
        raise OutputExistsError(f"{run_dir} is not empty and holds no training run; choose another folder")
    return None, False


def write_run_file(run_dir: Path, identity: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(identity, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, run_dir / RUN_FILE)


def begin_checkpoint(run_dir: Path, step: int) -> Path:
    """Create the (empty) temporary folder of checkpoint ``step``; main process only."""
    tmp = run_dir / f".tmp-{_PREFIX}{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_rank_state(tmp: Path, rank: int) -> None:
    """Every rank saves its own RNG state (dropout differs per rank)."""
    torch.save(rng_state(), tmp / f"rng_{rank}.pt")


def write_main_state(
    tmp: Path,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
) -> None:
    save_file({k: v.contiguous().cpu() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, default=str) + "\n")  # last: marks completeness


def finish_checkpoint(run_dir: Path, tmp: Path, step: int, keep: int) -> Path:
    """Rename the finished temporary folder into place, then drop all but the ``keep`` newest."""
    final = run_dir / f"{_PREFIX}{step:08d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoints(run_dir)[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, rank: int) -> dict[str, Any]:
    """Everything a checkpoint holds, as tensors/dicts (weights_only loading where possible)."""
    rng_file = path / f"rng_{rank}.pt"
    return {
        "trainable": load_file(str(path / "trainable.safetensors")),
        "optimizer": torch.load(path / "optimizer.pt", weights_only=True),
        "scheduler": torch.load(path / "scheduler.pt", weights_only=True),
        "rng": torch.load(rng_file, weights_only=False) if rng_file.is_file() else None,
        "state": json.loads((path / STATE_FILE).read_text()),
    }
