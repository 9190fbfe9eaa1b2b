"""Small shared pieces for the analyses: a headless figure, a safe save, a temporary attention mode."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from decoder2vec.backbone.bidirectional import is_bidirectional, set_bidirectional
from decoder2vec.io import write_file_atomic


def new_figure(rows: int = 1, cols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    """A matplotlib figure on the Agg backend (no display needed; safe on servers and in CI)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, **kwargs)
    return fig, axes


def save_figure(fig: Any, path: str | Path, dpi: int = 150) -> Path:
    """Render ``fig`` as PNG, write it atomically, and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    write_file_atomic(Path(path), buffer.getvalue())
    return Path(path)


@contextlib.contextmanager
def attention_mode(model: Any, bidirectional: bool) -> Iterator[None]:
    """Run the block with ``model`` in the given attention mode, restoring the previous mode afterwards."""
    before = is_bidirectional(model)
    set_bidirectional(model, bidirectional)
    try:
        yield
    finally:
        set_bidirectional(model, before)
