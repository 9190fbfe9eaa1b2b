"""Chunked corpus output (``--chunking late|naive``): option checks, the up-front pass over the documents,
and the ``embed_chunked`` keywords every shard uses.

A chunked run writes one row per chunk (``id``, ``chunk``, ``start``, ``end``, ``embedding``); the shard
unit stays documents, so a shard holds every chunk of its documents and is resumed and checked exactly like
a shard of one row per text. The chunking settings are recorded in the manifest (``chunking``,
``chunk_by``, ``chunk_size``, ``chunk_overlap``), and resuming with other values is refused. Late chunking
runs one forward over each whole document, up to the model's context (longer documents: overlapping
windows, see :mod:`decoder2vec.encoding.chunking`).
"""

from __future__ import annotations

from typing import Any

from decoder2vec.errors import ConfigError, InputError

MODES = ("late", "naive")
DEFAULT_CHUNK_SIZE = 256


def chunk_settings(
    chunking: str | None, chunk_by: str | None, chunk_size: int | None, chunk_overlap: int | None, engine: str
) -> dict[str, Any]:
    """The manifest's chunking settings (none without ``--chunking``), checked before anything is read."""
    from decoder2vec.encoding.chunking import CHUNKINGS

    if chunking is None:
        given = [
            flag
            for flag, value in (
                ("--chunk-by", chunk_by),
                ("--chunk-size", chunk_size),
                ("--chunk-overlap", chunk_overlap),
            )
            if value is not None
        ]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply with --chunking late or --chunking naive")
        return {}
    if chunking not in MODES:
        raise ConfigError(f"--chunking must be one of {', '.join(MODES)}, got {chunking!r}")
    if engine != "local":
        raise ConfigError(
            f"--chunking runs on --engine local only (not {engine!r}): a chunked shard has a row per chunk, "
            "which the Ray engine's gathering of one row per text does not handle yet"
        )
    chunk_by = chunk_by or "sentences"
    chunk_size = DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
    chunk_overlap = 0 if chunk_overlap is None else chunk_overlap
    if chunk_by not in CHUNKINGS:
        raise ConfigError(f"--chunk-by must be one of {', '.join(CHUNKINGS)}, got {chunk_by!r}")
    if chunk_size < 1:
        raise ConfigError(f"--chunk-size must be at least 1, got {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ConfigError(
            f"--chunk-overlap must be at least 0 and smaller than --chunk-size {chunk_size}, got {chunk_overlap}"
        )
    return {
        "chunking": chunking,
        "chunk_by": chunk_by,
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
    }


def check_chunked_corpus(model: str, corpus, settings: dict[str, Any]) -> None:
    """Split every document with the model's tokenizer alone (no weights), so a document that yields no
    chunk, or cannot be covered by late-chunking windows, is named by file and line before any model loads."""
    from decoder2vec.backbone.loading import load_tokenizer
    from decoder2vec.encoding.chunking import late_layout, split_documents
    from decoder2vec.encoding.tokenization import SequenceBuilder
    from decoder2vec.spec import EncoderSpec

    late = settings["chunking"] == "late"
    if not late and settings["chunk_size"] > settings["max_length"]:
        raise ConfigError(
            f"--chunk-size {settings['chunk_size']} exceeds --max-length {settings['max_length']}: naive chunks "
            "are embedded as texts of at most --max-length tokens; lower --chunk-size or raise --max-length"
        )
    spec = EncoderSpec.read(model)
    max_length = settings["max_length"]
    if late:  # one late forward reads up to the model's context
        max_length = spec.context_length or max_length
    builder = SequenceBuilder(load_tokenizer(spec.path), max_length)
    instruction = settings["instruction"]
    try:
        window = late_layout(builder, instruction)[1] if late else None
    except ValueError as exc:
        raise ConfigError(f"--instruction: {exc}") from None
    try:
        split_documents(
            builder,
            corpus.texts,
            chunking=settings["chunk_by"],
            chunk_size=settings["chunk_size"],
            overlap=settings["chunk_overlap"],
            instruction=instruction,
            name=lambda i: corpus.where[i],
            window=window,
        )
    except (ValueError, TypeError) as exc:
        raise InputError(str(exc)) from None


def chunk_options(settings: dict[str, Any]) -> dict[str, Any] | None:
    """The ``embed_chunked`` keywords of a run's settings; ``None`` for a run without chunking."""
    if not settings.get("chunking"):
        return None
    return {
        "chunking": settings["chunk_by"],
        "chunk_size": settings["chunk_size"],
        "overlap": settings["chunk_overlap"],
        "late": settings["chunking"] == "late",
    }
