"""SimCSE levers side by side: STS-B and SICK-R every K steps, one process per variant.

    python bench/simcse_sweep.py --lrs 3e-4 1e-3 --steps 160 --eval-every 40 [--adapter DIR] [--pairs 250]
        [--split dev|test] [--batch-size 16] [--mini-batch-size N]
    python bench/simcse_sweep.py --variant base --variant top10 lora.top_layers=10 --variant no-mntp adapters=[]

A ``--variant NAME [KEY=VALUE ...]`` is one process whose SimCSE settings are the defaults below changed
by the ``--set``-style assignments (``learning_rate=1e-3``, ``lora.top_layers=10``, ``adapters=[]``).

Each learning rate trains SimCSE (batch 16 unless --batch-size; with --mini-batch-size the batch is
embedded by GradCache in pieces, so more in-batch negatives cost no more memory; 48 tokens, the offline
Wikipedia corpus) on top of the MNTP
adapter that ``bench/recipe.py`` wrote (``--adapter``), in its own process with one torch thread, all
processes at once, so they share the machine equally. Every ``--eval-every`` steps the model is scored
(Spearman x100, mean pooling) on ``--pairs`` pairs of STS-B and SICK-R: test, or with ``--split dev``
STS-B dev and SICK trial, the sets to make choices on. Used to choose the
``cpu-1h`` budget's SimCSE learning rate; writes bench/results/simcse_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import RESULTS, SHARED, spaced_indices, sts_spearman


def pick(data, pairs: int, subset: str) -> list[int]:
    """Indices of the pairs to score: the first ``pairs`` or ``pairs`` evenly spaced ones."""
    return (
        list(range(min(pairs, len(data.scores))))
        if subset == "first"
        else spaced_indices(len(data.scores), pairs)
    )


def worker(name: str, overrides: list[str], args: argparse.Namespace) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    from decoder2vec.evaluation.loaders import load_sick, load_stsb
    from decoder2vec.training.config import SimCSEConfig, apply_overrides
    from decoder2vec.training.recipes import simcse

    # dev: STS-B dev and SICK trial, the sets choices are made on; test: report once, at the end
    files = {
        "dev": ("sts-dev.csv", "SICK_trial.txt"),
        "test": ("sts-test.csv", "SICK_test_annotated.txt"),
    }[args.split]
    data = {
        "STS-B": load_stsb(args.data_dir / "stsbenchmark" / files[0]),
        "SICK-R": load_sick(args.data_dir / "sick2014" / files[1]),
    }
    sets = {name: (d, pick(d, args.pairs, args.subset)) for name, d in data.items()}
    rows: list[dict] = []

    def evaluate(step: int) -> None:
        if step % args.eval_every and step != args.steps:
            return
        encoder = recipe.encoder  # the encoder being trained (its pooled module is what the loop optimises)
        encoder.module.eval()  # no dropout while scoring
        encoder.max_length = 128  # score whole sentences (training truncates at 48)
        row = {"variant": name, "step": step, "seconds": round(time.perf_counter() - start, 1)}
        with torch.no_grad():
            for task, (d, indices) in sets.items():
                scores = sts_spearman(encoder, d, indices, dims=[None, *args.dims])
                row[task] = scores[None]
                for dim in args.dims:  # the same vectors truncated (Matryoshka prefixes)
                    row[f"{task}@{dim}"] = scores[dim]
        encoder.module.train()
        encoder.max_length = 48
        print(json.dumps(row), flush=True)
        rows.append(row)

    cfg = SimCSEConfig(
        model=args.model,
        adapters=[str(args.adapter)],
        max_steps=args.steps,
        learning_rate=3e-3,
        batch_size=args.batch_size,
        mini_batch_size=args.mini_batch_size,
        max_seq_length=48,
        log_every=20,
        save_every=10**9,
        merge=False,
    )
    apply_overrides(cfg, overrides)
    recipe = simcse.SimCSERecipe(cfg)
    start = time.perf_counter()  # training time plus the scoring so far
    recipe.run(args.work_dir / name, overwrite=True, callbacks=[evaluate])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=[], help="shorthand: one variant per rate")
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME [KEY=VALUE",
        help="a named variant and its setting changes (repeatable)",
    )
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16, help="sentences per step (in-batch negatives)")
    parser.add_argument(
        "--mini-batch-size",
        type=int,
        default=None,
        help="GradCache micro-batch: a large batch in small pieces",
    )
    parser.add_argument("--eval-every", type=int, default=40)
    parser.add_argument(
        "--dims", type=int, nargs="*", default=[], help="also score these truncation widths (Matryoshka)"
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", type=Path, default=RESULTS / "recipe-runs" / "mntp" / "adapter")
    parser.add_argument("--pairs", type=int, default=250)
    parser.add_argument(
        "--subset", choices=["spaced", "first"], default="spaced", help="evenly spaced pairs, or the first N"
    )
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument(
        "--split", choices=["dev", "test"], default="test", help="dev = STS-B dev + SICK trial (for choices)"
    )
    parser.add_argument("--work-dir", type=Path, default=RESULTS / "simcse-sweep-runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "simcse_sweep.json")
    args = parser.parse_args()
    if not (args.adapter / "adapter_config.json").is_file():
        raise SystemExit(f"no MNTP adapter at {args.adapter}: run bench/recipe.py first, or pass --adapter")

    variants = [(f"lr{lr:g}", [f"learning_rate={lr}"]) for lr in args.lrs]
    variants += [(v[0], v[1:]) for v in args.variant]
    if not variants:
        raise SystemExit("nothing to run: give --lrs or --variant")
    # an executor, not a Pool: a worker killed for memory (a large batch without --mini-batch-size) raises
    # BrokenProcessPool here instead of leaving the sweep waiting forever for its result
    with ProcessPoolExecutor(len(variants), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(worker, name, sets, args) for name, sets in variants]
        results = [future.result() for future in futures]
    rows = [row for per_variant in results for row in per_variant]
    print(f"\n{'variant':<24}{'step':>6}{'seconds':>9}{'STS-B':>8}{'SICK-R':>8}")
    for row in rows:
        print(
            f"{row['variant']:<24}{row['step']:>6}{row['seconds']:>9.0f}{row['STS-B']:>8.2f}{row['SICK-R']:>8.2f}"
            + "".join(f"  @{d}: {row[f'STS-B@{d}']:.2f} / {row[f'SICK-R@{d}']:.2f}" for d in args.dims)
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "variants": variants, "rows": rows}, indent=2
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
