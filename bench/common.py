"""Shared benchmark helpers: data, the fp32 matmul ceiling, FLOP counting, result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

# ../shared/data beside the checkout; BENCH_DATA names it elsewhere (e.g. from a git worktree)
SHARED = Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn):
    """``(seconds, fn())``: wall time of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def spaced_indices(n: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``range(n)`` (all of them without a limit). The STS files are
    ordered by genre, so the first N pairs would be one genre only."""
    if limit is None or limit >= n:
        return list(range(n))
    return [round(i * (n - 1) / (limit - 1)) for i in range(limit)] if limit > 1 else [0]


def sts_spearman(
    encoder,
    data,
    indices: list[int] | None = None,
    batch_size: int = 64,
    dims: list[int | None] | None = None,
) -> float | dict:
    """Spearman x100 of cosine similarity vs gold on the pairs ``indices`` (default: all) of an STS data set.

    With ``dims`` (e.g. ``[None, 256, 64]``): one score per truncation width from the same forward passes,
    as ``{dim: score}`` (None = full width; cosine on the prefix = ``encode(dimensions=d)``)."""
    from decoder2vec.evaluation.metrics import sts_scores

    indices = range(len(data.scores)) if indices is None else indices
    a = encoder.encode([data.sentences1[i] for i in indices], batch_size=batch_size)
    b = encoder.encode([data.sentences2[i] for i in indices], batch_size=batch_size)
    gold = [data.scores[i] for i in indices]
    if dims is None:
        return sts_scores(a, b, gold)["cosine_spearman"]
    return {d: sts_scores(a[:, :d], b[:, :d], gold)["cosine_spearman"] for d in dims}


def sts_sentences(limit: int | None = None) -> list[str]:
    """Unique sentences of STS-B test (needs ../shared/data)."""
    from decoder2vec.evaluation.loaders import load_stsb

    path = SHARED / "stsbenchmark" / "sts-test.csv"
    if not path.is_file():
        raise SystemExit(f"benchmark data not found: {path}")
    data = load_stsb(path)
    pairs = (s for pair in zip(data.sentences1, data.sentences2) for s in pair)
    return list(dict.fromkeys(pairs))[:limit]  # unique, in file order


def mixed_documents(n: int, seed: int = 0) -> list[str]:
    """Documents of mixed length (about 30-500 tokens) made of consecutive STS-B sentences."""
    sentences = sts_sentences()
    rng = np.random.default_rng(seed)
    docs, cursor = [], 0
    for _ in range(n):
        k = int(rng.integers(2, 36))
        docs.append(" ".join(sentences[(cursor + i) % len(sentences)] for i in range(k)))
        cursor += k
    return docs


def matmul_ceiling_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of a large square matmul: the practical ceiling of this CPU right now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def forward_flops(config, lengths: list[int]) -> float:
    """FLOPs of one forward over sequences of ``lengths`` real tokens.

    2 x non-embedding parameters per token (every weight is one multiply-add), plus attention:
    QK^T and AV each cost 2 x L x (heads x head_dim) per token per layer.
    """
    d, layers = config.hidden_size, config.num_hidden_layers
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    per_layer = d * heads * head_dim * 2 + d * kv * head_dim * 2 + 3 * d * config.intermediate_size
    dense = 2 * layers * per_layer
    total_tokens = sum(lengths)
    attention = sum(4 * n * n * heads * head_dim * layers for n in lengths)
    return dense * total_tokens + attention


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        **payload,
    }
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path
