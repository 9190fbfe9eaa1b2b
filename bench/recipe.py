"""The LLM2Vec ablation on the default model: what each step of the recipe buys, on STS-B and SICK-R.

    python bench/recipe.py [--budget quick|cpu-1h|paper] [--mntp-steps N] [--simcse-steps N] [--max-pairs N]
    python bench/recipe.py --budget cpu-2h [--run DIR]

``--budget cpu-2h`` trains nothing: it scores the shipped default encoder (the adapters in
resources/encoders/smollm2-135m-llm2vec, made by ``decoder2vec convert --config cpu-2h``), or with ``--run
DIR`` the output of such a convert run (to check a reproduction), next to causal, bidirectional, Bi+MNTP,
Echo and the all-MiniLM-L6-v2 reference, on the full STS-B dev/test, SICK trial and SICK-R test sets, with
the training wall time of each trained variant (from its recipe.json). Writes bench/results/recipe-cpu-2h.json.

Variants (all mean pooling): causal, bidirectional (no training), Bi+MNTP, Bi+MNTP+SimCSE. Scores are
the Spearman correlation (x100) of cosine similarity with the gold score on the STS-B test set and the
SICK test set (relatedness), read from ../shared/data (or --data-dir); ``--max-pairs N`` keeps N evenly
spaced pairs per set (the files are ordered by genre). MNTP and SimCSE train on the offline Wikipedia
corpus. Writes bench/results/recipe.json and prints a table. ``quick`` (the default) takes a few
minutes on 2 CPU cores, ``cpu-1h`` about an hour, ``paper`` (the paper's step counts) needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import spaced_indices, sts_spearman

from decoder2vec.evaluation.loaders import load_sick, load_stsb

ROOT = Path(__file__).resolve().parent
VARIANTS = ["causal", "bidirectional", "Bi+MNTP", "Bi+MNTP+SimCSE"]
# Per stage: steps, batch size, sequence length, learning rate.
BUDGETS = {
    "quick": {"mntp": (20, 4, 128, 5e-5), "simcse": (20, 16, 64, 3e-5)},
    # About an hour on 2 cores. With ~1/30 of the paper's MNTP tokens and ~1/40 of its SimCSE sentences,
    # the paper's learning rates (5e-5 / 3e-5, meant for 1000 steps at batch 32 / 128) barely move the
    # LoRA weights; a side-by-side sweep of SimCSE at 3e-4, 1e-3 and 3e-3 picked 3e-3 (see BENCHMARKS.md).
    "cpu-1h": {"mntp": (300, 4, 128, 3e-4), "simcse": (200, 16, 48, 3e-3)},
    # Scores the shipped encoder (resources/recipes/cpu-2h.yaml made it) instead of training: see cpu_2h().
    "cpu-2h": None,
    # The paper's step counts and learning rates (MNTP batch 32 x 512 needs a GPU; see recipes/llm2vec-*.yaml).
    "paper": {"mntp": (1000, 32, 512, 5e-5), "simcse": (1000, 128, 128, 3e-5)},
}


def score(encoder, data, max_pairs: int | None) -> float:
    """Spearman x100 of cosine similarity vs gold, on ``max_pairs`` evenly spaced pairs (all by default)."""
    return sts_spearman(encoder, data, spaced_indices(len(data.scores), max_pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick")
    parser.add_argument("--mntp-steps", type=int)
    parser.add_argument("--simcse-steps", type=int)
    parser.add_argument("--mntp-lr", type=float, help="MNTP learning rate (default: the budget's)")
    parser.add_argument("--simcse-lr", type=float, help="SimCSE learning rate (default: the budget's)")
    parser.add_argument(
        "--max-pairs", type=int, default=None, help="Score N evenly spaced pairs of each set (default: all)."
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent.parent / "shared" / "data")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "results" / "recipe-runs")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "recipe.json")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--mntp-adapter",
        type=Path,
        help="Reuse this trained MNTP adapter (e.g. a previous run's recipe-runs/mntp/adapter) instead of training one.",
    )
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=VARIANTS, help="Variants to score (default: all)."
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 is steadier on a busy shared CPU)."
    )
    parser.add_argument("--run", type=Path, help="cpu-2h: score this `convert --config cpu-2h` output")
    parser.add_argument(
        "--trained-only",
        action="store_true",
        help="cpu-2h: score only the trained row (a reproduction check)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.budget == "cpu-2h":
        return cpu_2h(args)

    from decoder2vec import Encoder
    from decoder2vec.backbone.loading import load_backbone
    from decoder2vec.training import run_mntp, run_simcse
    from decoder2vec.training.config import MNTPConfig, SimCSEConfig

    sets = {
        "STS-B": load_stsb(args.data_dir / "stsbenchmark" / "sts-test.csv"),
        "SICK-R": load_sick(args.data_dir / "sick2014" / "SICK_test_annotated.txt"),
    }
    budget = BUDGETS[args.budget]
    m_steps, m_batch, m_len, m_lr = budget["mntp"]
    s_steps, s_batch, s_len, s_lr = budget["simcse"]
    mntp_cfg = MNTPConfig(
        model=args.model,
        max_steps=args.mntp_steps or m_steps,
        learning_rate=args.mntp_lr or m_lr,
        batch_size=m_batch,
        max_seq_length=m_len,
        seed=args.seed,
        log_every=10,
        save_every=100,
        eval_every=0,
        eval_batches=4,
        merge=False,
    )
    simcse_cfg = SimCSEConfig(
        model=args.model,
        max_steps=args.simcse_steps or s_steps,
        learning_rate=args.simcse_lr or s_lr,
        batch_size=s_batch,
        max_seq_length=s_len,
        seed=args.seed,
        log_every=10,
        save_every=100,
        merge=False,
    )

    timings: dict[str, float] = {}
    start = time.perf_counter()
    if args.mntp_adapter:
        mntp_adapter, mntp_metrics = args.mntp_adapter, {"reused": str(args.mntp_adapter)}
    else:
        mntp = run_mntp(mntp_cfg, args.work_dir / "mntp", overwrite=True)
        mntp_adapter, mntp_metrics = mntp.adapter, mntp.metrics
        timings["mntp_s"] = time.perf_counter() - start
    simcse_cfg.adapters = [str(mntp_adapter)]
    start = time.perf_counter()
    simcse = run_simcse(simcse_cfg, args.work_dir / "simcse", overwrite=True)
    timings["simcse_s"] = time.perf_counter() - start

    variants = {
        "causal": {"bidirectional": False, "adapters": None},
        "bidirectional": {"bidirectional": True, "adapters": None},
        "Bi+MNTP": {"bidirectional": True, "adapters": [mntp_adapter]},
        "Bi+MNTP+SimCSE": {"bidirectional": True, "adapters": [mntp_adapter, simcse.adapter]},
    }
    variants = {name: kw for name, kw in variants.items() if name in args.variants}
    device = "cuda" if torch.cuda.is_available() else "cpu"  # scored in fp32 either way
    rows = []
    for name, kw in variants.items():
        model, tok = load_backbone(args.model, dtype="float32", device=device, **kw)
        encoder = Encoder(model, tok, pooling="mean", max_length=128)
        row = {
            "variant": name,
            **{task: score(encoder, pairs, args.max_pairs) for task, pairs in sets.items()},
        }
        rows.append(row)
        print(f"{name:<22}" + "".join(f"{task}={row[task]:6.2f}  " for task in sets), flush=True)

    print(f"\n{'variant':<22}{'STS-B':>8}{'SICK-R':>8}")
    for row in rows:
        print(f"{row['variant']:<22}{row['STS-B']:>8.2f}{row['SICK-R']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "model": args.model,
        "budget": args.budget,
        "max_pairs": args.max_pairs,
        "threads": torch.get_num_threads(),
        "mntp": {
            "steps": mntp_cfg.max_steps,
            "batch_size": mntp_cfg.batch_size,
            "max_seq_length": mntp_cfg.max_seq_length,
            "learning_rate": mntp_cfg.learning_rate,
            "metrics": mntp_metrics,
        },
        "simcse": {
            "steps": simcse_cfg.max_steps,
            "batch_size": simcse_cfg.batch_size,
            "max_seq_length": simcse_cfg.max_seq_length,
            "learning_rate": simcse_cfg.learning_rate,
            "metrics": simcse.metrics,
        },
        "seconds": timings,
        "results": rows,
    }
    args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


def cpu_2h(args: argparse.Namespace) -> None:
    """One table: the shipped encoder (or a convert run) against its ablations and two references."""
    from quality import reference_model_path

    from decoder2vec import Encoder
    from decoder2vec.backbone.default_encoder import MANIFEST, default_encoder_folder, shipped_dir
    from decoder2vec.evaluation.runner import load_variants

    sets = {
        "STS-B dev": load_stsb(args.data_dir / "stsbenchmark" / "sts-dev.csv"),
        "SICK trial": load_sick(args.data_dir / "sick2014" / "SICK_trial.txt"),
        "STS-B test": load_stsb(args.data_dir / "stsbenchmark" / "sts-test.csv"),
        "SICK-R test": load_sick(args.data_dir / "sick2014" / "SICK_test_annotated.txt"),
    }
    if args.run:  # a convert output: its merged encoder and its adapters/
        record = json.loads((args.run / "recipe.json").read_text())
        model, seconds = (
            record["model"],
            {s["name"]: s.get("seconds") for s in record["stages"] if "adapter" in s},
        )
        mntp, trained, source = args.run / "adapters" / "mntp", str(args.run), f"convert run {args.run}"
    else:  # the shipped bundle
        manifest = json.loads((shipped_dir() / MANIFEST).read_text())
        model, seconds = manifest["base"], {s["name"]: s.get("seconds") for s in manifest["stages"]}
        mntp, trained, source = shipped_dir() / "mntp", str(default_encoder_folder()), "shipped encoder"
    names = {"mntp": "MNTP", "simcse": "SimCSE", "supervised": "supervised"}
    trained_row = "Bi + " + " + ".join(names[s] for s in seconds) + f" ({source})"
    # Bi + MNTP: the run's own MNTP adapter, else --mntp-adapter (an MNTP-only ablation), else no row
    mntp = mntp if mntp.is_dir() else args.mntp_adapter
    minilm = reference_model_path()
    # the trained row first (the one that matters most if the run is cut short); Echo, the slowest, last
    variants = {trained_row: lambda: Encoder.from_pretrained(trained)}
    if not args.trained_only:
        if minilm:
            variants["all-MiniLM-L6-v2 (reference)"] = lambda: (
                next(iter(load_variants("st:" + minilm))).encoder
            )
        variants["causal, mean"] = lambda: Encoder.from_pretrained(model, bidirectional=False)
        variants["bidirectional, mean (no training)"] = lambda: Encoder.from_pretrained(model)
        if mntp:
            variants["Bi + MNTP"] = lambda: Encoder.from_pretrained(model, adapters=[mntp])
        variants["Echo (causal, mean over the 2nd copy)"] = lambda: next(
            v.encoder for v in load_variants(model, ["echo"]) if v.name == "echo"
        )
    train_s = {
        "Bi + MNTP": seconds.get("mntp"),
        trained_row: sum(v or 0 for v in seconds.values()) or None,
    }
    rows = []
    for name, make in variants.items():
        encoder = make()
        row = {"variant": name, "train_s": train_s.get(name)}
        for task, data in sets.items():
            row[task] = sts_spearman(encoder, data)
        rows.append(row)
        print(json.dumps(row), flush=True)
        del encoder
    header = f"\n| variant | {' | '.join(sets)} | training wall time |"
    print(header + "\n|---|" + "---:|" * (len(sets) + 1))
    for row in rows:
        minutes = f"{row['train_s'] / 60:.0f} min" if row["train_s"] else "—"
        print(f"| {row['variant']} | " + " | ".join(f"{row[t]:.1f}" for t in sets) + f" | {minutes} |")
    out = args.out.with_name("recipe-cpu-2h-trained.json" if args.trained_only else "recipe-cpu-2h.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"source": source, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
