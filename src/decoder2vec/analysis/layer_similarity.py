"""Paper Fig. 5: how much does switching on bidirectional attention change each layer's token states?

For every layer (the embedding output first) and token position, the cosine similarity between the hidden
state the model computes causally and the one it computes bidirectionally, averaged over sentences. The
embedding layer is untouched by attention (cosine 1); later layers drift as tokens start to see the future.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decoder2vec.analysis.future_tokens import load_tuples
from decoder2vec.analysis.plotting import attention_mode, new_figure, save_figure
from decoder2vec.errors import DataFormatError
from decoder2vec.io import write_json_atomic


def default_texts() -> list[str]:
    """Sentences from the packaged future-token tuples (q = A + B of each)."""
    return [f"{t.a} {t.b}" for t in load_tuples()]


def read_texts(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise DataFormatError(path, "file is empty")
    return texts


def layer_similarity(
    encoder: Any, texts: Sequence[str], *, max_positions: int = 32, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Mean causal-vs-bidirectional cosine, shape (layers + 1, max_positions), and the count per cell.

    Positions are token positions from the start of each sequence (special tokens included); a cell no
    sentence reaches is NaN.
    """
    sums: np.ndarray | None = None
    counts = np.zeros(max_positions, dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        batch = encoder.tokenize(list(texts[start : start + batch_size]))
        with attention_mode(encoder.model, False):
            causal = encoder.token_states(batch, all_layers=True)
        with attention_mode(encoder.model, True):
            bidir = encoder.token_states(batch, all_layers=True)
        if sums is None:
            sums = np.zeros((len(causal), max_positions))
        real = batch.attention_mask.bool()
        positions = batch.position_ids
        keep = real & (positions < max_positions)
        pos_idx = positions[keep].numpy()
        for layer, (c, b) in enumerate(zip(causal, bidir, strict=True)):
            cos = torch.nn.functional.cosine_similarity(c.float(), b.float(), dim=-1).cpu()
            np.add.at(sums[layer], pos_idx, cos[keep].numpy())
        np.add.at(counts, pos_idx, 1)
    assert sums is not None
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return mean, counts


def run_layer_similarity(
    encoder: Any, out_dir: str | Path, *, texts_path: str | Path | None = None, max_positions: int = 32
) -> dict[str, Any]:
    """Compute the map and write ``layer_similarity.png`` (heat map) and ``layer_similarity.json``."""
    texts = read_texts(texts_path) if texts_path is not None else default_texts()
    mean, counts = layer_similarity(encoder, texts, max_positions=max_positions)
    shown = counts > 0
    out_dir = Path(out_dir)
    # one cell per (layer, position), kept readable for 2 to 80 layers
    size = (min(14.0, max(6.0, 0.3 * shown.sum() + 3)), min(8.0, max(3.5, 0.22 * mean.shape[0] + 2.5)))
    fig, ax = new_figure(1, 1, figsize=size)
    image = ax.imshow(
        mean[:, shown],
        aspect="auto",
        origin="lower",
        cmap="viridis",
        vmin=min(0.0, float(np.nanmin(mean))),
        vmax=1.0,
    )
    ax.set_xlabel("token position")
    ax.set_ylabel("layer (0 = embeddings)")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("cosine(causal, bidirectional) hidden states")
    fig.colorbar(image, ax=ax, label="mean cosine similarity")
    plot = save_figure(fig, out_dir / "layer_similarity.png")
    per_layer = [float(np.nanmean(row[shown])) for row in mean]
    summary = {
        "n_texts": len(texts),
        "plot": str(plot),
        "mean_per_layer": per_layer,
        "positions": int(shown.sum()),
        "counts": counts[shown].tolist(),
        "similarity": [[round(float(v), 6) for v in row[shown]] for row in mean],
    }
    write_json_atomic(out_dir / "layer_similarity.json", summary)
    return summary
