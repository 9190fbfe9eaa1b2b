"""The local engine: one process embeds the pending shards one after another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decoder2vec.corpus.compact import Calibration
from decoder2vec.corpus.inputs import Corpus
from decoder2vec.corpus.progress import ShardProgress
from decoder2vec.corpus.shards import write_chunk_shard, write_shard


def run_local(
    encoder,
    corpus: Corpus,
    plan: list[range],
    pending: list[int],
    out: Path,
    *,
    instruction: str | None,
    normalize: bool,
    batch_size: int,
    progress: ShardProgress,
    compact: dict[str, Any] | None = None,
    calibration: Calibration | None = None,
    chunks: dict[str, Any] | None = None,
) -> None:
    """Embed and write each pending shard; a crash loses at most the shard in progress.

    ``compact`` holds the ``dimensions``/``precision``/``ranges`` keywords of ``Encoder.encode``; with
    ``calibration``, the int8/uint8 ranges are first computed on its rows and recorded. ``chunks`` (the
    ``embed_chunked`` keywords of a ``--chunking`` run) writes a row per chunk of each document.
    """
    compact = dict(compact or {})
    common = {"instruction": instruction, "batch_size": batch_size, "normalize": normalize}
    if calibration is not None:  # raw pooled embeddings of the sample, as Encoder.calibrate keeps them
        texts = [corpus.texts[k] for k in calibration.rows]
        if chunks is not None:  # the raw vectors of the sample documents' chunks
            raw = _chunked(encoder, corpus, calibration.rows, chunks, instruction, batch_size)[1]
        else:
            raw = encoder.encode(
                texts, instruction=instruction, batch_size=batch_size, show_progress_bar=False
            )
        compact["ranges"] = calibration.ranges(raw)
    for index in pending:
        rows = plan[index]
        if chunks is not None:
            output = encoder.output_spec(normalize=normalize, **compact)
            docs, embeddings = _chunked(encoder, corpus, rows, chunks, instruction, batch_size, output)
            spans = [[(span.start, span.end) for span in doc.spans] for doc in docs]
            write_chunk_shard(out, index, corpus.ids[rows.start : rows.stop], spans, embeddings)
            progress.shard_done(len(rows))
            continue
        embeddings = encoder.encode(
            corpus.texts[rows.start : rows.stop], show_progress_bar=False, **common, **compact
        )
        write_shard(out, index, corpus.ids[rows.start : rows.stop], embeddings)
        progress.shard_done(len(rows))


def _chunked(encoder, corpus: Corpus, rows, chunks: dict[str, Any], instruction, batch_size, output=None):
    """``embed_chunked`` on the corpus records ``rows``, naming a bad one by its file and line."""
    from decoder2vec.encoding.chunking import embed_chunked

    rows = list(rows)
    return embed_chunked(
        encoder,
        [corpus.texts[k] for k in rows],
        instruction=instruction,
        batch_size=batch_size,
        output=output,
        name=lambda i: corpus.where[rows[i]],
        show_progress_bar=False,
        **chunks,
    )
