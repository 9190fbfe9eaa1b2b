"""Paper Fig. 4: do a prefix's token states capture what comes after it?

Each tuple (A, B, C, D) has B and C meaning the same and D something else. We embed q = A+B, s+ = A+C and
s- = A+D, pooling *only over A's tokens*: the continuation is attended to but not pooled. Under causal
attention A's states cannot see the continuation, so all three embeddings are identical (cosine 1); a model
whose states carry future information ranks s+ above s-.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decoder2vec.analysis.plotting import attention_mode, new_figure, save_figure
from decoder2vec.encoding.pooling import pool
from decoder2vec.encoding.tokenization import special_token_frame
from decoder2vec.errors import DataFormatError
from decoder2vec.io import iter_jsonl, write_json_atomic

RESOURCE = "future_token_tuples.jsonl"


@dataclass(frozen=True)
class FutureTuple:
    a: str
    b: str
    c: str
    d: str


def load_tuples(path: str | Path | None = None) -> list[FutureTuple]:
    """Tuples from a JSONL file of ``{"a", "b", "c", "d"}`` objects (default: the packaged set of 30)."""
    if path is None:
        source: Path | str = RESOURCE
        text = resources.files("decoder2vec").joinpath("resources", RESOURCE).read_text(encoding="utf-8")
    else:
        source = Path(path)
        if not source.is_file():
            raise DataFormatError(source, "file not found")
        text = source.read_text(encoding="utf-8")
    tuples = []
    bad_json = lambda lineno, detail: DataFormatError(source, f"invalid JSON ({detail})", lineno)
    for lineno, obj in iter_jsonl(source, text.splitlines(), error=bad_json):
        if not isinstance(obj, dict) or not all(
            isinstance(obj.get(k), str) and obj[k].strip() for k in "abcd"
        ):
            raise DataFormatError(
                source, 'each line needs non-empty string fields "a", "b", "c" and "d"', lineno
            )
        tuples.append(FutureTuple(obj["a"].strip(), obj["b"].strip(), obj["c"].strip(), obj["d"].strip()))
    if not tuples:
        raise DataFormatError(source, "no tuples in file")
    return tuples


def prefix_embeddings(
    encoder: Any, prefixes: Sequence[str], continuations: Sequence[str], *, mode: str = "mean"
) -> np.ndarray:
    """Embed ``prefix + " " + continuation`` pooling over the prefix's tokens only.

    The text starts after the tokenizer's leading special tokens (e.g. BOS); the prefix is its first n
    tokens, where n is the prefix's own token count. The ids are compared to make sure the tokenizer did not
    merge across the boundary (a merge would shift which tokens count as the prefix).
    """
    texts = [f"{p} {c}" for p, c in zip(prefixes, continuations, strict=True)]
    batch = encoder.tokenize(texts)
    n_special = len(special_token_frame(encoder.tokenizer)[0])
    prefix_ids = encoder.tokenizer(list(prefixes), add_special_tokens=False)["input_ids"]
    mask = torch.zeros_like(batch.attention_mask)
    for row, ids in enumerate(prefix_ids):
        real = torch.nonzero(batch.attention_mask[row]).flatten()
        positions = real[n_special : n_special + len(ids)]
        if batch.input_ids[row, positions].tolist() != list(ids):
            raise ValueError(
                f"the tokenizer merges across the end of prefix {prefixes[row]!r}; end it with a word boundary"
            )
        mask[row, positions] = 1
    states = encoder.token_states(batch)
    return (
        pool(states, mask.to(states.device), batch.attention_mask.to(states.device), mode)
        .float()
        .cpu()
        .numpy()
    )


def _cosines(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    return np.sum(x * y, axis=1)


def future_token_scores(
    encoder: Any, tuples: Sequence[FutureTuple], *, batch_size: int = 16
) -> dict[str, np.ndarray]:
    """cos(q, s+) and cos(q, s-) for every tuple, in the encoder's current attention mode."""
    pos, neg = [], []
    for start in range(0, len(tuples), batch_size):
        chunk = tuples[start : start + batch_size]
        prefixes = [t.a for t in chunk]
        q = prefix_embeddings(encoder, prefixes, [t.b for t in chunk])
        s_pos = prefix_embeddings(encoder, prefixes, [t.c for t in chunk])
        s_neg = prefix_embeddings(encoder, prefixes, [t.d for t in chunk])
        pos.append(_cosines(q, s_pos))
        neg.append(_cosines(q, s_neg))
    return {"pos": np.concatenate(pos), "neg": np.concatenate(neg)}


def run_future_tokens(
    encoder: Any, out_dir: str | Path, *, tuples_path: str | Path | None = None
) -> dict[str, Any]:
    """Score the tuples causally and bidirectionally; write ``future_tokens.png`` and ``future_tokens.json``."""
    tuples = load_tuples(tuples_path)
    out_dir = Path(out_dir)
    results = {}
    for mode, bidirectional in (("causal", False), ("bidirectional", True)):
        with attention_mode(encoder.model, bidirectional):
            results[mode] = future_token_scores(encoder, tuples)

    fig, axes = new_figure(1, 2, figsize=(10, 3.8))
    for ax, (mode, scores) in zip(axes, results.items(), strict=True):
        lo = float(min(scores["pos"].min(), scores["neg"].min()))
        bins = np.linspace(min(lo, 0.999) - 1e-3, 1.0 + 1e-3, 25)
        ax.hist(scores["pos"], bins=bins, alpha=0.6, label="cos(q, s+)  same meaning", color="tab:green")
        ax.hist(scores["neg"], bins=bins, alpha=0.6, label="cos(q, s−)  different", color="tab:red")
        ax.set_title(f"{mode} attention")
        ax.set_xlabel("cosine similarity (pooled over A only)")
        ax.set_ylabel("tuples")
        ax.legend(fontsize=8)
    plot = save_figure(fig, out_dir / "future_tokens.png")

    summary: dict[str, Any] = {"n_tuples": len(tuples), "plot": str(plot), "modes": {}}
    for mode, scores in results.items():
        summary["modes"][mode] = {
            "mean_pos": float(scores["pos"].mean()),
            "mean_neg": float(scores["neg"].mean()),
            # a strict win: under causal attention both cosines are 1 and nobody wins
            "win_rate": float(np.mean(scores["pos"] > scores["neg"] + 1e-6)),
            "pos": scores["pos"].round(6).tolist(),
            "neg": scores["neg"].round(6).tolist(),
        }
    write_json_atomic(out_dir / "future_tokens.json", summary)
    return summary
