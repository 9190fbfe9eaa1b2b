"""Turn a request's inputs into the exact token sequences ``Encoder.encode`` would embed.

Texts go through the encoder's own :class:`~decoder2vec.encoding.tokenization.SequenceBuilder`, so the
server's embeddings equal ``encode``'s. Token-id inputs are taken as a text's ids *without* special
tokens: the tokenizer's prefix/suffix specials (e.g. BOS) and the instruction are added around them,
exactly as for a text, and they are truncated the same way.
"""

from __future__ import annotations

from decoder2vec.encoding.tokenization import Sequence, SequenceBuilder
from decoder2vec.errors import InputError
from decoder2vec.io import check_unicode
from decoder2vec.serving.protocol import APIError


def build_sequences(
    builder: SequenceBuilder,
    inputs: list[str] | list[list[int]],
    instruction: str | None,
    *,
    truncate: bool,
    vocab_size: int,
) -> list[Sequence]:
    """One sequence per input; raises a 422 :class:`APIError` that names the offending input."""
    instruction = instruction or None  # "" means no instruction, as in ``encode``
    if instruction is not None:
        _check_unicode(instruction, "instruction")
    try:
        if inputs and isinstance(inputs[0], str):
            _check_not_blank(inputs)
            sequences = builder.build(list(inputs), [instruction] * len(inputs) if instruction else None)
        else:
            sequences = _from_token_ids(builder, inputs, instruction, vocab_size)
    except ValueError as exc:  # an instruction that leaves no room for the text
        raise APIError(422, str(exc), param="instruction") from None
    if not truncate:
        for i, sequence in enumerate(sequences):
            if sequence.truncated:
                raise APIError(
                    422,
                    f"input[{i}] is longer than the maximum of {builder.max_length} tokens and "
                    '"truncate" is false; shorten it or leave truncation on',
                    param="input",
                    code="input_too_long",
                )
    return sequences


def _check_not_blank(texts: list[str]) -> None:
    for i, text in enumerate(texts):
        if not text.strip():
            raise APIError(
                422, f"input[{i}] is empty or whitespace-only; there is nothing to embed", param="input"
            )
        _check_unicode(text, f"input[{i}]")


def _check_unicode(text: str, where: str) -> None:
    """JSON may carry lone surrogates (``"\\ud800"``), which no tokenizer encodes: a 422, not a 500."""
    try:
        check_unicode(text, where)
    except InputError as exc:
        raise APIError(422, str(exc), param=where.split("[")[0]) from None


def _from_token_ids(
    builder: SequenceBuilder, inputs: list[list[int]], instruction: str | None, vocab_size: int
) -> list[Sequence]:
    for i, ids in enumerate(inputs):
        if not ids:
            raise APIError(422, f"input[{i}] is an empty list of token ids", param="input")
        bad = next((t for t in ids if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise APIError(422, f"input[{i}] holds token id {bad}, outside [0, {vocab_size})", param="input")
    instruction_ids: list[int] = []
    if instruction:
        # The text is already tokenized, so the instruction's trailing space cannot fold into its
        # first token; the instruction is tokenized as the builder would split it off a text.
        head, _ = builder._split(instruction, "")
        instruction_ids = builder.token_ids([head])[0]
    return [builder._assemble(instruction_ids, list(ids), instructed=bool(instruction)) for ids in inputs]
