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
import pickle
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from decoder2vec.io import check_inside, settle_tree, write_file_atomic
from decoder2vec.training.errors import OutputExistsError, ResumeMismatchError, TrainingError

RUN_FILE = "run.json"
BEST_COPY = "best.safetensors"  # with checkpoint selection: the best weights so far (the loop's best/)
METRICS_FILE = "metrics.jsonl"
# What a stage writes into its run folder besides the files above and its checkpoints (recipes' save()):
# with --overwrite these are removed, and nothing else in the folder (a user's notes stay).
STAGE_OUTPUTS = ("adapter", "merged", "encoder")
STATE_FILE = "trainer_state.json"
_PREFIX = "checkpoint-"

# Settings that do not change the trained weights, so a resume may differ in them.
NON_IDENTITY_KEYS = {"log_every", "save_every", "keep_checkpoints", "eval_every", "eval_batches", "merge"}


_RNG_FORMAT = "decoder2vec-rng-1"


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


def save_rng_state(state: dict[str, Any], path: Path) -> None:
    """``state`` (as :func:`rng_state` returns it) as a safetensors file: the generators' words as integer
    tensors, their few scalars as JSON metadata. No pickle, so loading it can never run code."""
    version, words, gauss_next = state["python"]
    algorithm, key, pos, has_gauss, cached_gaussian = state["numpy"]
    tensors = {
        "python": torch.tensor(words, dtype=torch.int64),
        "numpy": torch.from_numpy(np.asarray(key, dtype=np.int64)),
        "torch": state["torch"].to(torch.uint8).contiguous(),
    }
    for i, cuda in enumerate(state.get("cuda", [])):
        tensors[f"cuda.{i}"] = cuda.to(torch.uint8).contiguous()
    metadata = {
        "format": _RNG_FORMAT,
        "python": json.dumps({"version": version, "gauss_next": gauss_next}),
        "numpy": json.dumps(
            {
                "algorithm": algorithm,
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": cached_gaussian,
            }
        ),
    }
    save_file(tensors, str(path), metadata=metadata)


def load_rng_state(path: Path) -> dict[str, Any]:
    """The state :func:`save_rng_state` wrote; anything else is a :class:`TrainingError` naming the file."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        if metadata.get("format") != _RNG_FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, expected {_RNG_FORMAT!r}")
        python, numpy = json.loads(metadata["python"]), json.loads(metadata["numpy"])
        state = {
            "python": (python["version"], tuple(tensors["python"].tolist()), python["gauss_next"]),
            "numpy": (
                numpy["algorithm"],
                tensors["numpy"].numpy().astype(np.uint32),
                numpy["pos"],
                numpy["has_gauss"],
                numpy["cached_gaussian"],
            ),
            "torch": tensors["torch"],
        }
    except (SafetensorError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise TrainingError(f"{path} is not a random-state file decoder2vec wrote ({exc})") from None
    cuda = sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda:
        state["cuda"] = [tensors[k] for k in cuda]
    return state


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


def read_record(file: Path) -> Any:
    """A JSON record a run wrote (``run.json``, a conversion's ``pipeline.json``); invalid JSON is an error
    naming the file and the way out."""
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise TrainingError(
            f"{file} is not valid JSON ({exc}); pass the settings again with --overwrite"
        ) from None


def recorded_recipe(run_dir: Path) -> tuple[str, dict[str, Any]] | None:
    """The stage name and settings a run in ``run_dir`` started with (its ``run.json``); None without one."""
    run_file = run_dir / RUN_FILE
    if not run_file.is_file():
        return None
    data = read_record(run_file)
    if not isinstance(data, dict) or not isinstance(data.get("recipe"), dict):
        raise TrainingError(f"{run_file} records no recipe; pass the settings again with --overwrite")
    return str(data.get("stage", "")), data["recipe"]


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
            check_resumes([(run_dir, identity)])
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


def check_resumes(runs: list[tuple[Path, dict[str, Any]]]) -> None:
    """Raise one :class:`ResumeMismatchError` naming every difference between each run folder's saved
    identity and the current one (all runs, all keys: not one per attempt). Folders without a run file
    are skipped (they start fresh)."""
    found = []
    for run_dir, identity in runs:
        run_file = run_dir / RUN_FILE
        if run_file.is_file():
            diffs = identity_diff(json.loads(run_file.read_text()), identity)
            found += [(run_dir, diff) for diff in diffs]
    if not found:
        return
    if len(runs) == 1:
        raise ResumeMismatchError(
            f"{runs[0][0]} was written by a different model or recipe; refusing to resume:\n  "
            + "\n  ".join(diff for _, diff in found)
        )
    raise ResumeMismatchError(
        f"{len(found)} setting(s) differ from the saved runs; refusing to resume:\n  "
        + "\n  ".join(f"{run_dir}: {diff}" for run_dir, diff in found)
    )


def is_run_entry(name: str, scratch: tuple[str, ...] = ()) -> bool:
    """Whether ``name`` in a run folder is something a run writes (and ``--overwrite`` may remove)."""
    for prefix in (_PREFIX, f".tmp-{_PREFIX}"):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            return True
    return name in (RUN_FILE, METRICS_FILE, *STAGE_OUTPUTS, *scratch)


def remove_run(run_dir: Path, scratch: tuple[str, ...] = ()) -> None:
    """Remove what a previous run wrote in ``run_dir`` (see :func:`is_run_entry`), and only that; a link
    is removed, never followed."""
    for entry in sorted(run_dir.iterdir()):
        if not is_run_entry(entry.name, scratch):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def write_run_file(run_dir: Path, identity: dict[str, Any]) -> None:
    write_file_atomic(run_dir / RUN_FILE, json.dumps(identity, indent=2, sort_keys=True, default=str) + "\n")


def begin_checkpoint(run_dir: Path, step: int) -> Path:
    """Create the (empty) temporary folder of checkpoint ``step``; main process only."""
    tmp = check_inside(run_dir / f".tmp-{_PREFIX}{step:08d}", run_dir)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_rank_state(tmp: Path, rank: int) -> None:
    """Every rank saves its own RNG state (dropout differs per rank)."""
    save_rng_state(rng_state(), tmp / f"rng_{rank}.safetensors")


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
    final = check_inside(run_dir / f"{_PREFIX}{step:08d}", run_dir)
    settle_tree(tmp)  # safetensors writes 0600 files; give them the umask's mode, and flush them to disk
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoints(run_dir)[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, rank: int) -> dict[str, Any]:
    """Everything a checkpoint holds, as tensors/dicts; nothing in it is unpickled beyond plain tensors
    and containers (``weights_only``), so a crafted checkpoint cannot run code."""
    rng_file = path / f"rng_{rank}.safetensors"
    rng = load_rng_state(rng_file) if rng_file.is_file() else None
    if rng is None and (path / f"rng_{rank}.pt").is_file():
        # Checkpoints before the safetensors format pickled Python objects; loading those would take
        # weights_only=False, i.e. trusting the file with code execution. The loop re-seeds torch from
        # (seed, step, rank) before every step, so the weights are exact without it.
        warnings.warn(
            f"{path / f'rng_{rank}.pt'}: an older pickled random-state file, not loaded (it could run code); "
            "resuming without it",
            stacklevel=2,
        )
    return {
        "trainable": load_file(str(path / "trainable.safetensors")),
        "optimizer": _load_tensors(path / "optimizer.pt"),
        "scheduler": _load_tensors(path / "scheduler.pt"),
        "rng": rng,
        "state": json.loads((path / STATE_FILE).read_text()),
    }


def _load_tensors(path: Path) -> Any:
    """A ``torch.save``d state dict, loaded weights-only; a file holding more is refused in one line."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        raise TrainingError(
            f"refusing to load {path}: it holds objects other than tensors, and loading them could run code"
        ) from None
