"""The README's first command: see a decoder become an encoder, in well under five minutes on a CPU."""

from __future__ import annotations

import time
from collections.abc import Callable

DEMO_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming an instrument.",
    "The stock market fell sharply today.",
    "Share prices dropped at the close of trading.",
    "A cat is sleeping on the sofa.",
]


def similarity_table(sentences: list[str], embeddings) -> str:
    """A plain-text cosine-similarity matrix with row labels."""
    sims = embeddings @ embeddings.T
    labels = [f"[{i}]" for i in range(len(sentences))]
    lines = ["      " + " ".join(f"{label:>6}" for label in labels)]
    for label, row in zip(labels, sims):
        lines.append(f"{label:>5} " + " ".join(f"{value:6.3f}" for value in row))
    return "\n".join(lines)


def run_demo(model: str, echo: Callable[[str], None] = print) -> None:
    """Load ``model`` causal and bidirectional, prove the attention mode, print both tables."""
    from decoder2vec import Encoder

    for i, sentence in enumerate(DEMO_SENTENCES):
        echo(f"[{i}] {sentence}")
    for bidirectional in (False, True):
        start = time.perf_counter()
        encoder = Encoder.from_pretrained(model, bidirectional=bidirectional)
        embeddings = encoder.encode(DEMO_SENTENCES, normalize=True)
        mode = "bidirectional" if bidirectional else "causal"
        echo(f"\n{mode} attention, mean pooling ({encoder!r}, {time.perf_counter() - start:.1f}s):")
        echo(similarity_table(DEMO_SENTENCES, embeddings))
    echo("\nBidirectional attention alone is untrained; MNTP + SimCSE (decoder2vec convert) teach the model to use it.")
