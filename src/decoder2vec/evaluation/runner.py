"""The ``decoder2vec eval`` runner: resolve tasks and model variants, score them, write the report.

A report folder gets ``results.json`` (machine-readable, written atomically) and ``results.md`` (the table
a human reads). Baselines are variants of the *same* checkpoint, so the table isolates what bidirectional
attention (and the chosen pooling) buys over the causal model and over Echo embeddings.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from decoder2vec.evaluation.encoders import EchoEncoder, SentenceTransformerEncoder, TextEncoder
from decoder2vec.evaluation.errors import DataFormatError
from decoder2vec.evaluation.evaluators import evaluate_task
from decoder2vec.evaluation.instructions import instruction_for
from decoder2vec.evaluation.loaders import load_sick, load_stsb, load_task_dir
from decoder2vec.evaluation.tasks import EvalTask
from decoder2vec.io import json_safe, write_file_atomic, write_json_atomic

# built-in task name -> (file under the data dir, reader, split)
BUILTIN_TASKS: dict[str, tuple[str, Callable, str]] = {
    "stsb": ("stsbenchmark/sts-test.csv", load_stsb, "test"),
    "stsb-dev": ("stsbenchmark/sts-dev.csv", load_stsb, "dev"),
    "sickr": ("sick2014/SICK_test_annotated.txt", load_sick, "test"),
}

BASELINES: tuple[str, ...] = ("causal-mean", "causal-weighted_mean", "causal-last_token", "echo")
SENTENCE_TRANSFORMERS_PREFIX = "st:"


def resolve_task(name: str, data_dir: str | Path, *, use_instructions: bool = True) -> EvalTask:
    """A built-in task (``stsb``, ``stsb-dev``, ``sickr``) or a custom task folder ``DATA_DIR/NAME``.

    ``name`` may also be a path to a custom task folder.
    """
    data_dir = Path(data_dir)
    if name in BUILTIN_TASKS:
        rel, reader, split = BUILTIN_TASKS[name]
        path = data_dir / rel
        if not path.is_file():
            raise DataFormatError(
                path, f"task '{name}' needs this file; is --data-dir laid out like shared/data?"
            )
        task = EvalTask(name=name, type="sts", data=reader(path), split=split, source=[str(path)])
        task.instruction = instruction_for(name, "STS") if use_instructions else None
        return task
    folder = Path(name) if Path(name).is_dir() else data_dir / name
    if not (folder / "task.json").is_file():
        known = ", ".join(BUILTIN_TASKS)
        raise DataFormatError(
            folder / "task.json", f"unknown task '{name}': not one of {known}, and no custom task folder here"
        )
    task = load_task_dir(folder, name=folder.name)
    if not use_instructions:
        task.instruction = None
    return task


@dataclass
class Variant:
    """A named encoder to evaluate (the model itself, or one of its baselines)."""

    name: str
    encoder: TextEncoder
    description: str


def load_variants(
    model: str,
    baselines: Sequence[str] = (),
    *,
    pooling: str | None = None,
    max_length: int | None = None,
) -> Iterable[Variant]:
    """Yield the model, then each baseline, loading lazily so only one extra copy lives at a time.

    ``model`` is anything ``Encoder.from_pretrained`` accepts, or ``st:PATH`` for a sentence-transformers
    model (which has no causal baselines).
    """
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    if model.startswith(SENTENCE_TRANSFORMERS_PREFIX):
        if baselines:
            raise ValueError(
                "baselines need a decoder model; a sentence-transformers model has no causal variant"
            )
        from sentence_transformers import SentenceTransformer

        path = model[len(SENTENCE_TRANSFORMERS_PREFIX) :]
        yield Variant(
            "model",
            SentenceTransformerEncoder(SentenceTransformer(path), name=path),
            f"sentence-transformers {path}",
        )
        return

    from decoder2vec import Encoder

    main = Encoder.from_pretrained(model, pooling=pooling, max_length=max_length)
    yield Variant("model", main, repr(main))
    del main
    if not baselines:
        return
    # one causal copy serves every causal baseline: only the pooling differs, and pooling has no weights
    causal = Encoder.from_pretrained(model, bidirectional=False, pooling="mean", max_length=max_length)
    for name in baselines:
        if name == "echo":
            yield Variant(name, EchoEncoder(causal), "causal, mean pooling over the second copy (Echo)")
        else:
            mode = name.removeprefix("causal-")
            enc = Encoder(
                causal.model,
                causal.tokenizer,
                pooling=mode,
                max_length=causal.max_length,
                append_eos=causal.append_eos,
            )
            yield Variant(name, enc, f"causal, {mode} pooling")


NAN_NOTE = (
    "NaN: the metric is undefined here; a correlation is NaN when the gold scores or the model's "
    "similarities are constant (e.g. a collapsed model whose embeddings are all equal)"
)


def mark_nan(rows: list[dict[str, Any]]) -> list[str]:
    """Flag rows whose scores hold NaN/inf (``nan_scores`` + ``note``); returns ``variant/task`` of each."""
    flagged = []
    for row in rows:
        bad = [k for k, v in row["scores"].items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            row["nan_scores"], row["note"] = bad, NAN_NOTE
            flagged.append(f"{row['variant']}/{row['task']}")
    return flagged


def markdown_table(results: list[dict[str, Any]]) -> str:
    """Variants as rows, tasks as columns, each cell the task's main score (×100)."""
    variants = list(dict.fromkeys(r["variant"] for r in results))
    tasks = list(dict.fromkeys(r["task"] for r in results))
    mains = {r["task"]: r["main_score"] for r in results}
    cell = {(r["variant"], r["task"]): r["scores"][r["main_score"]] for r in results}
    head = "| variant | " + " | ".join(f"{t} ({mains[t]})" for t in tasks) + " |"
    rule = "|---|" + "---:|" * len(tasks)
    rows = [f"| {v} | " + " | ".join(_cell(cell.get((v, t))) for t in tasks) + " |" for v in variants]
    return "\n".join([head, rule, *rows]) + "\n"


def _cell(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if math.isfinite(value) else "NaN"


def run_evaluation(
    variants: Iterable[Variant],
    tasks: Sequence[EvalTask],
    *,
    batch_size: int = 32,
    show_progress_bar: bool | None = None,
) -> list[dict[str, Any]]:
    """Score every task for every variant; one result row per (variant, task), with its wall time."""
    rows: list[dict[str, Any]] = []
    for variant in variants:
        bar = tqdm(tasks, desc=f"eval {variant.name}", unit="task", disable=show_progress_bar is False)
        for task in bar:
            bar.set_postfix_str(task.name)
            start = time.perf_counter()
            scores = evaluate_task(
                variant.encoder, task, batch_size=batch_size, show_progress_bar=show_progress_bar
            )
            rows.append(
                {
                    "variant": variant.name,
                    "description": variant.description,
                    "task": task.name,
                    "type": task.type,
                    "split": task.split,
                    "n": len(task),
                    "instruction": task.instruction,
                    "main_score": task.main_score,
                    "scores": scores,
                    "seconds": round(time.perf_counter() - start, 3),
                }
            )
    return rows


def write_report(
    report_dir: str | Path, rows: list[dict[str, Any]], meta: dict[str, Any]
) -> tuple[Path, Path]:
    """``results.json`` (meta + rows) and ``results.md`` in ``report_dir``; both replaced atomically."""
    report_dir = Path(report_dir)
    flagged = mark_nan(rows)  # NaN is written as null and explained, never a reason to lose the report
    payload = {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **meta, "results": rows}
    json_path = report_dir / "results.json"
    write_json_atomic(json_path, json_safe(payload))
    md_path = report_dir / "results.md"
    title = (
        f"# decoder2vec eval: {meta.get('model', '')}\n\nScores ×100; each cell is the task's main score.\n\n"
    )
    notes = f"\n{NAN_NOTE} ({', '.join(flagged)}).\n" if flagged else ""
    write_file_atomic(md_path, title + markdown_table(rows) + notes)
    return json_path, md_path
