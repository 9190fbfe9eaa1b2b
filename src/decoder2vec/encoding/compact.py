"""The output step of the embedding core: truncate to ``dimensions``, normalize, quantize to ``precision``.

Semantics are sentence-transformers' (``encode(truncate_dim=, normalize_embeddings=, precision=)`` and
``quantize_embeddings``), so vectors and indexes are interchangeable with what its users already have:

- truncation keeps the first ``dimensions`` values (a Matryoshka prefix), *then* normalization;
- ``int8`` / ``uint8``: per dimension, ``[min, max]`` of a calibration sample is cut into 255 steps,
  ``floor((x - min) / step)`` clipped to ``[0, 255]`` (minus 128 for int8);
- ``binary`` / ``ubinary``: the sign bit of each value (``x > 0``), packed 8 to a byte, big-endian
  within the byte (``np.packbits``), minus 128 for ``binary``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from decoder2vec.encoder_config import check_dimensions, check_precision
from decoder2vec.errors import InputError

INT8_PRECISIONS = ("int8", "uint8")


@dataclass(frozen=True)
class OutputSpec:
    """What to make of pooled float vectors. ``ranges`` (2, dimensions): per-dimension min and max for
    the int8 precisions, as ``quantize_embeddings`` takes them."""

    dimensions: int | None = None
    normalize: bool = False
    precision: str = "float32"
    ranges: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.precision in INT8_PRECISIONS and self.ranges is None:
            raise ValueError(
                f"precision={self.precision!r} needs calibration ranges: call encoder.calibrate(sample_texts) "
                "once (the sample is saved with the encoder), or pass ranges= (a (2, dimensions) array of "
                "per-dimension min and max)"
            )
        if self.ranges is not None:
            check_ranges(self.ranges)  # before any text is encoded

    @classmethod
    def resolve(
        cls,
        width: int,
        calibration: np.ndarray | None,
        *,
        dimensions: int | None = None,
        normalize: bool = False,
        precision: str = "float32",
        ranges: np.ndarray | None = None,
    ) -> OutputSpec:
        """An encoder's output options, checked against its ``width``, with int8 ranges filled in from its
        ``calibration`` sample when none are given (every encoder kind resolves them here)."""
        dimensions = check_dimensions(dimensions, width)
        check_precision(precision)
        if precision in INT8_PRECISIONS and ranges is None and calibration is not None:
            ranges = calibration_ranges(calibration, dimensions, normalize)
        return cls(dimensions, bool(normalize), precision, ranges)


def check_ranges(ranges, width: int | None = None, where: str = "ranges") -> np.ndarray:
    """``ranges`` as a (2, width) float32 array of per-dimension [min, max]; NaN, infinite or inverted
    (min > max) dimensions are an :class:`InputError` naming ``where`` and the first such dimension.
    (Unchecked, NaN ranges quantize to zeros and inverted ones to reversed codes, silently.)"""
    try:
        array = np.asarray(ranges, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where} must be numbers: a (2, dimensions) array of min and max ({exc})") from None
    if array.ndim != 2 or array.shape[0] != 2 or (width is not None and array.shape[1] != width):
        want = f"(2, {width})" if width is not None else "(2, dimensions)"
        raise InputError(
            f"{where} must have shape {want} (min row, max row), got {array.shape}", param="ranges"
        )
    bad = np.flatnonzero(~np.isfinite(array).all(axis=0))
    if bad.size:
        d = int(bad[0])
        raise InputError(
            f"{where}: dimension {d} has a non-finite range [{array[0, d]}, {array[1, d]}] "
            f"({bad.size} such dimension(s)); recalibrate on finite embeddings",
            param="ranges",
        )
    inverted = np.flatnonzero(array[0] > array[1])
    if inverted.size:
        d = int(inverted[0])
        raise InputError(
            f"{where}: dimension {d} has min {array[0, d]} > max {array[1, d]} ({inverted.size} such "
            "dimension(s)); row 0 holds the minima, row 1 the maxima",
            param="ranges",
        )
    return array


def truncate_normalize(rows: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """The first ``dimensions`` columns of float rows, then (optionally) unit length; float32."""
    rows = np.asarray(rows, dtype=np.float32)
    if dimensions is not None:
        rows = rows[..., :dimensions]
    if normalize:
        norms = np.linalg.norm(rows, axis=-1, keepdims=True)
        rows = rows / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(rows, dtype=np.float32)


def calibration_ranges(sample: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """(2, d) per-dimension min and max of a calibration sample seen as ``encode`` would output it."""
    seen = truncate_normalize(sample, dimensions, normalize)
    return check_ranges(
        np.vstack([seen.min(axis=0), seen.max(axis=0)]), where="the calibration sample's ranges"
    )


def dequantize(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """int8 codes -> float: the centre of each code's bucket, within [min, max] (level 255 holds only
    values at or past the max: it stands for the max). A constant dimension (min == max) has one value,
    the min; its codes are all 0 (level 0: sentence-transformers divides by its zero step instead)."""
    start, stop = ranges[0].astype(np.float32), ranges[1].astype(np.float32)
    step = (stop - start) / 255  # 0 for a constant dimension: every code means its min
    return np.minimum((codes.astype(np.float32) + 128.5) * step + start, stop)


def quantize(rows: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Float rows -> ``precision`` (see the module doc); float32 is returned as is."""
    check_precision(precision)
    if precision == "float32":
        return rows
    if precision in INT8_PRECISIONS:
        if ranges is None:
            raise ValueError(f"precision={precision!r} needs ranges")
        ranges = check_ranges(ranges, rows.shape[-1])
        start = ranges[0]
        step = (ranges[1] - start) / 255
        step = np.where(step == 0, 1, step)  # a constant dimension: everything in the first bucket
        levels = np.clip(np.floor((rows - start) / step), 0, 255)
        return levels.astype(np.uint8) if precision == "uint8" else (levels - 128).astype(np.int8)
    bits = np.packbits(rows > 0, axis=-1)
    return bits if precision == "ubinary" else (bits.astype(np.int16) - 128).astype(np.int8)


def finish(rows: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """Pooled float rows -> the output ``spec`` asks for (truncate, normalize, quantize)."""
    return quantize(truncate_normalize(rows, spec.dimensions, spec.normalize), spec.precision, spec.ranges)
