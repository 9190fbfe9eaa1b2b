"""The training loop shared by all stages: optimizer, schedule, logging, atomic checkpoints, exact resume.

A stage supplies a :class:`Stage`: the module to train, a resumable :class:`BatchPlan`, a function that
turns global example indices into this process's batch, and a ``step`` that runs forward + backward.
Exact resume rests on two facts: the batch order is a pure function of ``(seed, epoch)`` and the data
position is saved; and the global RNG is re-seeded from ``(seed, step, rank)`` before every step, so
masking and dropout at step ``k`` do not depend on whether the process was restarted before it.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from decoder2vec.backbone.precision import require_native_bf16
from decoder2vec.io import append_line, check_inside, replace_folder
from decoder2vec.training import checkpoint as ckpt
from decoder2vec.training.data.sampling import BatchPlan
from decoder2vec.training.errors import ResumeMismatchError, SettingError, TrainingError
from decoder2vec.training.settings import StageConfig

log = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, Any, Any], dict[str, float]]

# A loss within 10% of its chance level (``chance_loss``, which contrastive steps report): the model no
# longer tells the texts of a batch apart. Seen on the 135M model at SimCSE rates that are fine for most
# seeds: LoRA rank 64, and one seed in three with Matryoshka terms (BENCHMARKS.md, #19).
CHANCE_FRACTION = 0.9


def at_chance(entry: dict[str, Any]) -> bool:
    """Whether a logged window's mean loss is at the chance level its step reported (if it reports one)."""
    chance = entry.get("chance_loss")
    return bool(chance) and entry.get("loss", 0.0) >= CHANCE_FRACTION * chance


@dataclass
class Stage:
    name: str
    model: nn.Module  # forward computes what ``step`` needs; its trainable parameters are the LoRA weights
    plan: BatchPlan
    make_batch: Callable[[list[int]], Any]  # global batch indices -> this process's batch
    step: StepFn  # (prepared model, batch, accelerator) -> {"loss": float, "tokens": int, ...}; does backward
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    eval_every: int = 0  # steps between evaluations (0: only at the end)
    # Checkpoint selection: the key of ``evaluate``'s scores to maximise. The best step's trainable weights
    # are kept in ``best/`` (see :func:`write_best`); the best so far is part of every checkpoint's state.
    select_metric: str | None = None
    # One-time work whose results live in the run folder (distill: the teacher's embeddings), called with it
    # and whether the run resumes from a checkpoint, on every process once the folder is checked and
    # claimed, before the first step; ``scratch`` names what it writes there, removed with the rest when a
    # fresh run fails before its first checkpoint.
    prepare: Callable[[Path, bool], None] | None = None
    scratch: tuple[str, ...] = ()


def make_accelerator(cfg: StageConfig):
    """An ``accelerate.Accelerator``: DDP under torchrun/accelerate launch; bf16 autocast on GPUs with bf16
    (unless ``dtype`` says otherwise) and on CPUs when ``dtype`` asks for it."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    if cuda:
        use_bf16 = torch.cuda.is_bf16_supported() and cfg.dtype in (None, "bfloat16")
    else:
        # opt-in on CPU: with AMX or AVX512-BF16 the matmuls run several times faster than fp32, elsewhere
        # they may run slower, and fp32 stays the default so CPU results do not change under anyone's feet
        use_bf16 = cfg.dtype == "bfloat16"
        if use_bf16:
            require_native_bf16("leave dtype unset (float32)", SettingError)
    # accelerate keeps one process-wide state and refuses an Accelerator of another precision; `convert`
    # runs its stages in one process, each with its own dtype, so a stage that changes it starts a fresh
    # state (the process group, PartialState, is kept)
    from accelerate.state import AcceleratorState

    precision = "bf16" if use_bf16 else "no"
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != precision:
        AcceleratorState._reset_state()
    # cpu=True is what makes accelerate run multi-process CPU jobs (torchrun without GPUs) as DDP over gloo.
    return Accelerator(mixed_precision=precision, cpu=not cuda)


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 1024 + rank


def linear_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak LR, then linear decay to 0 at ``total`` (the steps actually run)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def train(
    stage: Stage,
    cfg: StageConfig,
    run_dir: Path,
    identity: dict[str, Any],
    accelerator,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Callable[[int], None]] = (),
) -> dict[str, Any]:
    """Run ``cfg.max_steps`` optimizer steps (continuing from the newest checkpoint with ``resume``).

    Returns the last logged metrics. ``callbacks`` are called with the number of finished steps after
    each step (and after its checkpoint, if any).
    """
    acc = accelerator
    run_dir = Path(run_dir)
    start_from, wipe = ckpt.check_run_dir(run_dir, identity, resume=resume, overwrite=overwrite)
    if not wipe:  # what this run appends to, rewrites or removes must be its own files, before any work
        for name in (
            ckpt.RUN_FILE,
            ckpt.METRICS_FILE,
            *stage.scratch,
            BEST_DIR,
            *(p.name for p in ckpt.checkpoints(run_dir)),
        ):
            check_inside(run_dir / name, run_dir)
    acc.wait_for_everyone()
    created = not run_dir.exists()
    if acc.is_main_process:
        if wipe:  # --overwrite: the previous run's files, not the user's others in the folder
            ckpt.remove_run(run_dir, (*stage.scratch, BEST_DIR))
        ckpt.write_run_file(run_dir, identity)
    acc.wait_for_everyone()
    try:
        if stage.prepare is not None:
            stage.prepare(run_dir, start_from is not None)
        return _train(stage, cfg, run_dir, acc, start_from, callbacks)
    except BaseException:
        # A fresh run that failed before its first checkpoint leaves nothing behind, so the corrected
        # command is not refused as "already holds a training run".
        if start_from is None and acc.is_main_process and not ckpt.checkpoints(run_dir):
            (run_dir / ckpt.RUN_FILE).unlink(missing_ok=True)
            (run_dir / ckpt.METRICS_FILE).unlink(missing_ok=True)
            for name in (*stage.scratch, BEST_DIR):
                shutil.rmtree(run_dir / name, ignore_errors=True)
            if created and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
        raise


def _train(stage: Stage, cfg: StageConfig, run_dir: Path, acc, start_from, callbacks) -> dict[str, Any]:

    params = _trainable(stage.model)
    if not params:
        raise RuntimeError(
            f"stage {stage.name}: the model has no trainable parameters"
        )  # a wiring bug, not user input
    optimizer = torch.optim.AdamW(params.values(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = linear_schedule(optimizer, cfg.warmup_steps, cfg.max_steps)

    step = 0
    last: dict[str, Any] = {}
    best: dict[str, Any] | None = None  # {"metric", "score", "step"} of the best evaluation so far
    if start_from is not None:
        saved = ckpt.load_checkpoint(start_from, acc.process_index)
        unknown = set(saved["trainable"]) ^ set(params)
        if unknown:
            raise ResumeMismatchError(
                f"checkpoint {start_from} does not fit this model: {sorted(unknown)[:3]}"
            )
        with torch.no_grad():
            for name, value in saved["trainable"].items():
                params[name].copy_(value)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        stage.plan.load_state_dict(saved["state"]["plan"])
        if saved["rng"] is not None:
            ckpt.set_rng_state(saved["rng"])
        step = int(saved["state"]["step"])
        last = dict(saved["state"].get("metrics") or {})
        best = saved["state"].get("best")
        if best is not None and acc.is_main_process:
            # best/ may hold a later step's weights (written before a kill that lost that checkpoint); the
            # checkpoint's own copy puts back the best it knew, and the replayed steps redo the rest
            restore_best(run_dir, start_from, best)
        log.info("resuming %s from %s (step %d)", stage.name, start_from, step)

    model, optimizer = acc.prepare(stage.model, optimizer)
    metrics_file = run_dir / ckpt.METRICS_FILE
    batches = iter(stage.plan)
    window: dict[str, float] = {}
    window_steps, window_seconds = 0, 0.0  # seconds spent in training steps only (not eval, not saving)
    warned = False  # about a loss at chance level: once per run
    bar = tqdm(
        total=cfg.max_steps,
        initial=step,
        desc=stage.name,
        disable=not acc.is_local_main_process,
        dynamic_ncols=True,
    )

    def record(entry: dict[str, Any]) -> None:
        if acc.is_main_process:
            append_line(metrics_file, json.dumps(entry), root=run_dir)

    while step < cfg.max_steps:
        started = time.perf_counter()
        torch.manual_seed(step_seed(cfg.seed, step, acc.process_index))
        batch = stage.make_batch(next(batches))
        model.train()
        out = stage.step(model, batch, acc)
        if cfg.max_grad_norm and cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window_seconds += time.perf_counter() - started
        bar.update(1)

        for key, value in out.items():
            window[key] = window.get(key, 0.0) + float(value)
        window_steps += 1
        if step % max(cfg.log_every, 1) == 0 or step == cfg.max_steps:
            reduced = {
                k: float(acc.reduce(torch.tensor(v, device=acc.device), "sum")) for k, v in window.items()
            }
            seconds = window_seconds
            entry = {"stage": stage.name, "step": step, "lr": lr, "seconds": round(seconds, 3)}
            for key, value in reduced.items():
                if key == "tokens":
                    entry["tokens_per_s"] = value / max(seconds, 1e-9)
                else:
                    entry[key] = value / (window_steps * acc.num_processes)
            if not math.isfinite(entry.get("loss", 0.0)):
                # The weights are NaN from here on: going on would save (and publish) an encoder whose
                # every vector is NaN. The reduced window is the same on every process, so all stop here.
                raise TrainingError(
                    f"stage {stage.name}, step {step}: the loss is {entry['loss']} (not finite); stopping "
                    f"before anything more is saved. Lower learning_rate (now {cfg.learning_rate:g}) or check "
                    "the loss weights and temperature"
                )
            if not all(math.isfinite(v) for v in entry.values() if isinstance(v, float)):
                log.warning("non-finite metrics at step %d: %s", step, entry)
            bar.set_postfix(loss=f"{entry.get('loss', float('nan')):.4f}", lr=f"{lr:.2e}")
            log.info(
                " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items())
            )
            record(entry)
            last = entry
            window, window_steps, window_seconds = {}, 0, 0.0
            if not warned and at_chance(entry):
                warned = True
                log.warning(
                    "stage %s, step %d: the loss %.4g is at chance level (%.4g, as if every text had the same "
                    "embedding): the model no longer tells the texts apart. After lower losses this is a "
                    "collapse, which the rest of a run rarely undoes; lower learning_rate (now %g) or raise "
                    "warmup_steps (now %d)",
                    stage.name,
                    step,
                    entry["loss"],
                    entry["chance_loss"],
                    cfg.learning_rate,
                    cfg.warmup_steps,
                )

        if stage.evaluate is not None and eval_due(stage.eval_every, step, cfg.max_steps):
            model.eval()  # no dropout while scoring; the next step puts the model back in train mode
            with torch.no_grad():
                scores = stage.evaluate(model)
            model.train()
            entry = {"stage": stage.name, "step": step, **{f"eval_{k}": v for k, v in scores.items()}}
            if stage.select_metric is not None:
                score = scores.get(stage.select_metric)
                if score is None or not math.isfinite(score):
                    raise RuntimeError(
                        f"stage {stage.name}: evaluation gave no {stage.select_metric}: {scores}"
                    )
                if best is None or score > best["score"]:  # ties keep the earlier (cheaper to reach) step
                    best = {"metric": stage.select_metric, "score": float(score), "step": step}
                    if acc.is_main_process:
                        write_best(run_dir, acc.unwrap_model(model), best)
                entry["best_step"] = best["step"]
            log.info(" ".join(f"{k}={v}" for k, v in entry.items()))
            record(entry)
            last = {**last, **entry}

        if step % max(cfg.save_every, 1) == 0 or step == cfg.max_steps:
            save(
                acc, run_dir, step, model, optimizer, scheduler, stage.plan, cfg.keep_checkpoints, last, best
            )
        for callback in callbacks:
            callback(step)
    bar.close()
    if best is not None:
        last = {**last, "selected": best}
    return last


BEST_DIR = "best"
BEST_WEIGHTS = "trainable.safetensors"
BEST_RECORD = "best.json"


def write_best(run_dir: Path, model: nn.Module, best: dict[str, Any]) -> None:
    """``best/``: the trainable weights of the best evaluation so far and ``best.json`` (metric, score,
    step), built beside it and swapped in whole, so a kill never leaves half of it."""
    from safetensors.torch import save_file

    weights = {k: v.detach().contiguous().cpu() for k, v in _trainable(model).items()}

    def build(tmp: Path) -> None:
        save_file(weights, str(tmp / BEST_WEIGHTS))
        (tmp / BEST_RECORD).write_text(json.dumps(best, indent=2) + "\n")

    replace_folder(run_dir / BEST_DIR, build)


def restore_best(run_dir: Path, checkpoint: Path, best: dict[str, Any]) -> None:
    """Put back ``best/`` from the copy a checkpoint keeps (``best.safetensors``)."""
    copy = checkpoint / ckpt.BEST_COPY

    def build(tmp: Path) -> None:
        shutil.copyfile(copy, tmp / BEST_WEIGHTS)
        (tmp / BEST_RECORD).write_text(json.dumps(best, indent=2) + "\n")

    if copy.is_file():
        replace_folder(run_dir / BEST_DIR, build)


def load_best(run_dir: Path, model: nn.Module) -> dict[str, Any]:
    """Load ``best/``'s weights into ``model``'s trainable parameters; returns its record."""
    from safetensors.torch import load_file

    weights = load_file(str(Path(run_dir) / BEST_DIR / BEST_WEIGHTS))
    params = _trainable(model)
    if set(weights) != set(params):
        raise ResumeMismatchError(f"{run_dir / BEST_DIR} does not fit this model")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    return json.loads((Path(run_dir) / BEST_DIR / BEST_RECORD).read_text())


def eval_due(every: int, step: int, max_steps: int) -> bool:
    return step == max_steps or (every > 0 and step % every == 0)


def save(
    acc,
    run_dir: Path,
    step: int,
    model,
    optimizer,
    scheduler,
    plan: BatchPlan,
    keep: int,
    metrics: dict,
    best: dict[str, Any] | None = None,
) -> None:
    tmp = run_dir / f".tmp-checkpoint-{step:08d}"
    if acc.is_main_process:
        ckpt.begin_checkpoint(run_dir, step)
    acc.wait_for_everyone()
    ckpt.write_rank_state(tmp, acc.process_index)
    acc.wait_for_everyone()
    if acc.is_main_process:
        trainable = {n: p for n, p in acc.unwrap_model(model).named_parameters() if p.requires_grad}
        state = {"step": step, "plan": plan.state_dict(), "world_size": acc.num_processes, "metrics": metrics}
        if best is not None:
            # the best so far and its weights travel with the checkpoint: a resume selects exactly as an
            # uninterrupted run would
            state["best"] = best
            shutil.copyfile(run_dir / BEST_DIR / BEST_WEIGHTS, tmp / ckpt.BEST_COPY)
        ckpt.write_main_state(tmp, trainable=trainable, optimizer=optimizer, scheduler=scheduler, state=state)
        ckpt.finish_checkpoint(run_dir, tmp, step, keep)
    acc.wait_for_everyone()
