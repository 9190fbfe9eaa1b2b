"""Compact corpus output (``--dimensions``, ``--precision``): option checks, the ``Encoder.encode``
keywords, and the int8/uint8 calibration that every shard of a run shares.

The values themselves come from ``Encoder.encode`` (``decoder2vec.encoding.compact``). int8/uint8
quantize each dimension between a minimum and a maximum (sentence-transformers' ``ranges``): they are
read from the encoder's saved calibration sample when it has one (as ``encode`` does), else computed on
an evenly spaced sample of the corpus; either way they are kept in the manifest and passed to every
``encode`` call, so every shard, Ray worker and resumed run quantizes the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from decoder2vec.errors import ConfigError

# Precisions whose quantization needs per-dimension ranges, and how many corpus texts they are computed
# on when the encoder has no calibration sample of its own (as ``Encoder.calibrate`` keeps by default).
CALIBRATED = ("int8", "uint8")
CALIBRATION_TEXTS = 1000
# Stored values per output dimension, and their dtype: the binary precisions pack 8 dimensions a byte.
PACKED = ("binary", "ubinary")
DTYPES = {"float32": "float32", "int8": "int8", "uint8": "uint8", "binary": "int8", "ubinary": "uint8"}


def check_precision_option(precision: str, dimensions: int | None) -> str:
    """``--precision`` and the form of ``--dimensions``, before anything is read (the model's width is
    checked against ``--dimensions`` once its config is read, still before any model loads)."""
    from decoder2vec.encoder_config import check_precision

    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise ConfigError(f"--dimensions must be a whole number, got {dimensions!r}")
    if dimensions is not None and dimensions < 1:
        raise ConfigError(f"--dimensions must be at least 1, got {dimensions}")
    try:
        return check_precision(precision)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--precision: {exc}") from None


def output_shape(width: int, dimensions: int | None, precision: str) -> tuple[int, str]:
    """Values per stored embedding and their dtype name; ``--dimensions`` over ``width`` is refused."""
    from decoder2vec.encoder_config import check_dimensions

    try:
        dimensions = check_dimensions(dimensions, width)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--dimensions {dimensions}: {exc}") from None
    dims = width if dimensions is None else dimensions
    return (-(-dims // 8) if precision in PACKED else dims), DTYPES[precision]


def encode_options(settings: dict[str, Any], ranges=None) -> dict[str, Any]:
    """The ``Encoder.encode`` keywords of the compact settings (none for full float32 embeddings)."""
    options: dict[str, Any] = {}
    if settings.get("dimensions") is not None:
        options["dimensions"] = settings["dimensions"]
    if settings.get("precision", "float32") != "float32":
        options["precision"] = settings["precision"]
    if ranges is not None:
        options["ranges"] = np.asarray(ranges, dtype=np.float32)
    return options


def model_ranges(model: str, dimensions: int | None, normalize: bool) -> np.ndarray | None:
    """int8 ranges from the calibration sample saved with the encoder (read without loading weights), as
    ``Encoder.encode`` would use them; ``None`` if it has none."""
    from decoder2vec.backbone.loading import resolve_model_path
    from decoder2vec.encoder_config import read_calibration
    from decoder2vec.encoding.compact import calibration_ranges

    sample = read_calibration(resolve_model_path(model))
    return None if sample is None else calibration_ranges(sample, dimensions, normalize)


def calibration_rows(count: int) -> list[int]:
    """Evenly spaced rows of the corpus (at most ``CALIBRATION_TEXTS``) whose ranges calibrate int8/uint8."""
    return sorted({int(k) for k in np.linspace(0, count - 1, min(count, CALIBRATION_TEXTS)).round()})


@dataclass(frozen=True)
class Calibration:
    """Corpus rows to compute int8/uint8 ranges on (their raw pooled embeddings, seen with ``dimensions``
    and ``normalize`` as the output is), and where to record them before any shard is written."""

    rows: list[int]
    dimensions: int | None
    normalize: bool
    record: Callable[[np.ndarray], None]

    def ranges(self, raw: np.ndarray) -> np.ndarray:
        """Record and return the ranges of the sample's raw embeddings (in ``rows`` order)."""
        from decoder2vec.encoding.compact import calibration_ranges

        ranges = calibration_ranges(raw, self.dimensions, self.normalize).astype(np.float32)
        self.record(ranges)
        return ranges
