"""The local engine: one process embeds the pending shards one after another."""

from __future__ import annotations

from pathlib import Path

from decoder2vec.corpus.inputs import Corpus
from decoder2vec.corpus.progress import ShardProgress
from decoder2vec.corpus.shards import write_shard


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
) -> None:
    """Embed and write each pending shard; a crash loses at most the shard in progress."""
    for index in pending:
        rows = plan[index]
        embeddings = encoder.encode(
            corpus.texts[rows.start : rows.stop],
            instruction=instruction,
            batch_size=batch_size,
            normalize=normalize,
            show_progress_bar=False,
        )
        write_shard(out, index, corpus.ids[rows.start : rows.stop], embeddings)
        progress.shard_done(len(rows))
