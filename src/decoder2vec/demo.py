"""The README's first command: see a decoder become an encoder on 2 CPU cores.

1. Encode a few sentences causally and bidirectionally (attention mode proven by the self-check).
2. Run a short real LLM2Vec conversion (MNTP then SimCSE on the offline Wikipedia corpus).
3. Score four models on 375 held-out STS-B test pairs shipped with the package (Spearman x100 of cosine vs
   the gold score): the raw decoder causal and bidirectional, the demo's own conversion, and the shipped
   encoder (the cpu-2h recipe).
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from decoder2vec.backbone.default_model import DEFAULT_ENCODER, DEFAULT_MODEL
from decoder2vec.backbone.model_io import quiet_transformers
from decoder2vec.cli_common import ModelOption, reports_errors

DEMO_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming an instrument.",
    "The stock market fell sharply today.",
    "Share prices dropped at the close of trading.",
    "A cat is sleeping on the sofa.",
]


def similarity_table(sentences: list[str], embeddings) -> str:
    """A plain-text cosine-similarity matrix with row labels."""
    sims = embeddings @ embeddings.T
    labels = [f"[{i}]" for i in range(len(sentences))]
    lines = ["      " + " ".join(f"{label:>6}" for label in labels)]
    for label, row in zip(labels, sims):
        lines.append(f"{label:>5} " + " ".join(f"{value:6.3f}" for value in row))
    return "\n".join(lines)


def heldout_pairs() -> tuple[list[str], list[str], np.ndarray]:
    """The shipped held-out pairs (resources/heldout_pairs.tsv: STS-B test captions and SNLI genres)."""
    text = (
        resources.files("decoder2vec").joinpath("resources", "heldout_pairs.tsv").read_text(encoding="utf-8")
    )
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return [r[2] for r in rows], [r[3] for r in rows], np.array([float(r[1]) for r in rows])


def pair_score(encoder, pairs: tuple[list[str], list[str], np.ndarray]) -> float:
    """Spearman correlation (x100) between cosine similarity and the hand scores."""
    from decoder2vec.evaluation.metrics import sts_scores

    a, b, gold = pairs
    return sts_scores(encoder.encode(a), encoder.encode(b), gold)["cosine_spearman"]


def run_demo(
    model: str,
    echo: Callable[[str], None] = print,
    *,
    encoder: str | None = DEFAULT_ENCODER,
    train: bool = True,
    out: Path = Path("runs/demo"),
    mntp_steps: int = 20,
    simcse_steps: int = 60,
    seed: int | None = None,
) -> dict[str, float]:
    """Run the demo; returns the held-out pair scores by (labelled) model."""
    from decoder2vec import Encoder

    for i, sentence in enumerate(DEMO_SENTENCES):
        echo(f"[{i}] {sentence}")
    pairs, scores = heldout_pairs(), {}
    for bidirectional in (False, True):
        start = time.perf_counter()
        loaded = Encoder.from_pretrained(model, bidirectional=bidirectional)
        embeddings = loaded.encode(DEMO_SENTENCES, normalize=True)
        mode = "bidirectional" if bidirectional else "causal"
        scores[f"{model}, {mode}, untrained"] = pair_score(loaded, pairs)
        echo(f"\n{mode} attention, mean pooling ({loaded!r}, {time.perf_counter() - start:.1f}s):")
        echo(similarity_table(DEMO_SENTENCES, embeddings))

    if train:
        start = time.perf_counter()
        echo(
            f"\nConverting {model}: {mntp_steps} MNTP steps, then {simcse_steps} SimCSE steps on the offline Wikipedia corpus -> {out}"
        )
        hint = busy_machine_hint()
        if hint:
            echo(hint)
        converted = convert_briefly(model, out, mntp_steps, simcse_steps, seed)
        label = f"{model}, this demo's conversion ({mntp_steps}+{simcse_steps} steps)"
        scores[label] = pair_score(Encoder.from_pretrained(converted), pairs)
        echo(f"conversion took {time.perf_counter() - start:.0f}s")
    shipped_label = None
    if encoder:
        start = time.perf_counter()
        shipped = Encoder.from_pretrained(encoder)
        shipped_label = f"{encoder}" + (" (shipped: cpu-2h recipe)" if encoder == DEFAULT_ENCODER else "")
        scores[shipped_label] = pair_score(shipped, pairs)
        echo(f"\n{shipped_label}, mean pooling ({time.perf_counter() - start:.1f}s):")
        echo(similarity_table(DEMO_SENTENCES, shipped.encode(DEMO_SENTENCES, normalize=True)))

    echo(
        f"\nSpearman x100 of cosine similarity vs gold on {len(pairs[2])} held-out STS-B test pairs"
        " (no model here was trained or selected on them):"
    )
    width = max(map(len, scores))
    for name, value in scores.items():
        echo(f"  {name:<{width}} {value:6.1f}")
    if train:
        causal = scores[f"{model}, causal, untrained"]
        echo(verdict(scores[label], causal, shipped_label, scores.get(shipped_label)))
        echo(
            "The demo's conversion is minutes long; `decoder2vec convert --config cpu-2h` reproduces the shipped"
            " encoder, and the paper's recipe (--config llm2vec-llama) needs a GPU."
        )
    return scores


def busy_machine_hint(load: float | None = None, threads: int | None = None) -> str | None:
    """A hint when other work already fills the cores torch's threads will use: its intra-op threads then
    wait on each other, and a training step slowed 3-4x on a busy 2-core machine (SimCSE 104-137 s/step with
    2 threads against 35 s with 1, BENCHMARKS.md "The demo's conversion"). The threads are the user's
    setting, so the demo only says so."""
    import os

    import torch

    load = os.getloadavg()[0] if load is None and hasattr(os, "getloadavg") else load
    threads = torch.get_num_threads() if threads is None else threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if load is None or threads < 2 or load < cores:
        return None
    return (
        f"note: this machine is busy (load {load:.1f} on {cores} cores), so torch's {threads} threads will wait "
        "on each other; `OMP_NUM_THREADS=1 decoder2vec demo` trains several times faster here"
    )


def verdict(
    converted: float, causal: float, other: str | None = None, other_score: float | None = None
) -> str:
    """One plain sentence: where the demo's conversion lands against the model it started from and the
    shipped encoder (a conversion below causal is said as such, not left to the reader's arithmetic)."""
    gap = converted - causal
    side = f"{gap:.1f} points above" if gap > 0 else f"{-gap:.1f} points BELOW"
    text = f"This demo's conversion scores {converted:.1f}: {side} the causal model it started from ({causal:.1f})"
    if other is not None and other_score is not None:
        diff = other_score - converted
        text += f", and {abs(diff):.1f} points {'under' if diff > 0 else 'over'} {other} ({other_score:.1f})"
    text += "."
    if gap <= 0:
        text += (
            " That is not what the recipe gives (BENCHMARKS.md, 'The demo's conversion'): please report it."
        )
    return text


def convert_briefly(
    model: str, out: Path, mntp_steps: int, simcse_steps: int, seed: int | None = None
) -> Path:
    """A shortened LLM2Vec conversion; a finished one in ``out`` with the same settings is reused, an
    interrupted one resumed, and a finished demo run with other settings is redone."""
    from decoder2vec.training.errors import TrainingError
    from decoder2vec.training.loading import apply_overrides, load_pipeline
    from decoder2vec.training.pipeline import convert

    cfg = load_pipeline("demo")  # resources/recipes/demo.yaml
    cfg.model = model
    apply_overrides(
        cfg,
        [f"mntp.max_steps={mntp_steps}", f"mntp.eval_every={mntp_steps}", f"simcse.max_steps={simcse_steps}"]
        + ([f"mntp.seed={seed}", f"simcse.seed={seed}"] if seed is not None else []),
    )
    record = out / "recipe.json"  # written last, so the encoder folder is complete
    if not record.is_file():
        started = any((out / "stages").glob("*/run.json"))  # an interrupted demo run resumes
        with _brief_on_purpose():
            return convert(cfg, out, resume=started, recipe_source="demo")
    recorded = json.loads(record.read_text())
    if _same_settings(recorded, cfg):
        return out
    if recorded.get("recipe_source") != "demo":  # never overwrite a user's own conversion
        raise TrainingError(f"{out} holds a conversion the demo did not make; pass another --out")
    with _brief_on_purpose():
        return convert(cfg, out, overwrite=True, recipe_source="demo")


@contextlib.contextmanager
def _brief_on_purpose():
    """Without the short-run warning: the demo's conversion is short by design, at the CPU rates the
    warning itself recommends (demo.yaml), and the demo says so in its own summary."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*will barely change the model", category=UserWarning)
        yield


def _same_settings(record: dict, cfg) -> bool:
    """Whether a finished conversion's record has this demo's model, stages and stage settings."""
    keys = ("max_steps", "learning_rate", "batch_size", "max_seq_length", "warmup_steps", "seed")
    done = {stage["name"]: stage.get("config", {}) for stage in record.get("stages", [])}
    return (
        record.get("model") == cfg.model
        and list(done) == list(cfg.stages)
        and all(
            done[name].get(key) == getattr(getattr(cfg, name), key) for name in cfg.stages for key in keys
        )
    )


# ---------------------------------------------------------------- the `decoder2vec demo` command
@reports_errors
def demo_command(
    model: ModelOption = DEFAULT_MODEL,
    train: Annotated[
        bool, typer.Option("--train/--no-train", help="Run the short conversion and score it.")
    ] = True,
    out: Annotated[Path, typer.Option(help="Folder of the demo conversion (reused when finished).")] = Path(
        "runs/demo"
    ),
    mntp_steps: int = 20,
    simcse_steps: int = 60,
    seed: Annotated[int | None, typer.Option(help="Seed of both stages (default: the recipe's, 42).")] = None,
    encoder: Annotated[
        str, typer.Option(help="The trained encoder to compare with ('' to skip).")
    ] = DEFAULT_ENCODER,
) -> None:
    """The raw decoder (causal, bidirectional), a short real conversion and the shipped encoder, scored
    side by side on held-out pairs."""
    quiet_transformers()
    run_demo(
        model,
        echo=typer.echo,
        encoder=encoder or None,
        train=train,
        out=out,
        mntp_steps=mntp_steps,
        simcse_steps=simcse_steps,
        seed=seed,
    )
