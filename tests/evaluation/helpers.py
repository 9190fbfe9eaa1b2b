"""Test helpers: a fake (hash) encoder and the location of the shared evaluation data."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


class HashEncoder:
    """A deterministic fake: each (instruction, text) maps to a fixed random unit-free vector.

    It records every call so tests can check which instruction reached which text.
    """

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls: list[tuple[list[str], object]] = []

    def encode(self, texts, *, instruction=None, batch_size=32, normalize=False, show_progress_bar=None):
        texts = list(texts)
        self.calls.append((texts, instruction))
        rows = []
        for t in texts:
            seed = int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)
            rows.append(np.random.default_rng(seed).normal(size=self.dim))
        out = np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)
        if normalize:
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out
