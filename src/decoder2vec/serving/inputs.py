"""Turn a request's inputs into the exact token sequences ``Encoder.encode`` would embed.

Texts go through the encoder's own :class:`~decoder2vec.encoding.tokenization.SequenceBuilder`, so the
server's embeddings equal ``encode``'s. Token-id inputs are taken as a text's ids *without* special
tokens (``SequenceBuilder.build_from_ids``): the prefix/suffix specials and the instruction are added
around them, exactly as for a text, and they are truncated the same way.

Problems are raised as the library's :class:`~decoder2vec.errors.InputError` naming the input; the app
maps them to HTTP in one place.
"""

from __future__ import annotations

import numpy as np

from decoder2vec.encoder_config import check_dimensions
from decoder2vec.encoding.compact import INT8_PRECISIONS, OutputSpec, calibration_ranges
from decoder2vec.encoding.tokenization import Sequence, SequenceBuilder
from decoder2vec.errors import InputError
from decoder2vec.io import check_unicode

# Cohere's ``embedding_types`` names -> our precisions ("float" is float32).
EMBEDDING_TYPES = {
    "float": "float32",
    "int8": "int8",
    "uint8": "uint8",
    "binary": "binary",
    "ubinary": "ubinary",
}


def build_sequences(
    builder: SequenceBuilder,
    inputs: list[str] | list[list[int]],
    instruction: str | None,
    *,
    truncate: bool,
    vocab_size: int,
) -> list[Sequence]:
    """One sequence per input; raises :class:`InputError` (with ``param``) naming the offending input."""
    instruction = instruction or None  # "" means no instruction, as in ``encode``
    if instruction is not None:
        _check_unicode(instruction, "instruction")
    try:
        if inputs and isinstance(inputs[0], str):
            _check_not_blank(inputs)
            sequences = builder.build(list(inputs), [instruction] * len(inputs) if instruction else None)
        else:
            sequences = builder.build_from_ids(inputs, instruction, vocab_size=vocab_size)
    except InputError as exc:
        raise InputError(str(exc), param="input") from None
    except ValueError as exc:  # an instruction that leaves no room for the text
        raise InputError(str(exc), param="instruction") from None
    if not truncate:
        for i, sequence in enumerate(sequences):
            if sequence.truncated:
                raise InputError(
                    f"input[{i}] is longer than the maximum of {builder.max_length} tokens and "
                    '"truncate" is false; shorten it or leave truncation on',
                    param="input",
                    code="input_too_long",
                )
    return sequences


def _check_not_blank(texts: list[str]) -> None:
    for i, text in enumerate(texts):
        if not text.strip():
            raise InputError(f"input[{i}] is empty or whitespace-only; there is nothing to embed")
        _check_unicode(text, f"input[{i}]")


def _check_unicode(text: str, where: str) -> None:
    """JSON may carry lone surrogates (``"\\ud800"``), which no tokenizer encodes: a 422, not a 500."""
    try:
        check_unicode(text, where)
    except InputError as exc:
        raise InputError(str(exc), param=where.split("[")[0]) from None


def output_specs(
    width: int,
    dimensions: int | None,
    embedding_types: list[str] | None,
    calibration: np.ndarray | None,
) -> dict[str, OutputSpec]:
    """One :class:`OutputSpec` per requested embedding type (``float`` when none is asked for).

    OpenAI semantics for ``dimensions``: the vector is truncated and re-normalized (without
    ``dimensions`` the full pooled vector is returned as before). Types are Cohere's ``embedding_types``
    names; int8/uint8 ranges come from the served encoder's calibration sample.
    """
    try:
        dimensions = check_dimensions(dimensions, width)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc), param="dimensions") from None
    normalize = dimensions is not None
    specs = {}
    for kind in embedding_types or ["float"]:
        precision = EMBEDDING_TYPES.get(kind)
        if precision is None:
            raise InputError(
                f"unknown embedding type {kind!r}; choose from {', '.join(EMBEDDING_TYPES)}",
                param="embedding_types",
            )
        ranges = None
        if precision in INT8_PRECISIONS:
            if calibration is None:
                raise InputError(
                    f"embedding type {kind!r} needs the encoder's calibration sample, and this one has none: "
                    "calibrate it (Encoder.calibrate(sample_texts), then save) or ask for float/binary",
                    param="embedding_types",
                )
            ranges = calibration_ranges(calibration, dimensions, normalize)
        specs[kind] = OutputSpec(dimensions, normalize, precision, ranges)
    return specs
