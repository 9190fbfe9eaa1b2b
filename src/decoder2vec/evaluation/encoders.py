"""What the evaluators need from a model, and thin wrappers that give other models that shape.

Every evaluator here only calls ``encode``; keeping that contract small lets a decoder2vec ``Encoder``, a
sentence-transformers model, or a test double be evaluated by the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

Instruction = str | Sequence[str] | None

# Springer et al. (2024), "Repetition Improves Language Model Embeddings": the text is shown once, then the
# model is asked to repeat it; only the second copy is pooled, so every pooled token has seen the whole text
# even under causal attention.
ECHO_TEMPLATE = "Rewrite the sentence: {text}\nRewritten sentence: "


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns texts into one float vector each, in input order."""

    def encode(
        self,
        texts: Sequence[str],
        *,
        instruction: Instruction = None,
        batch_size: int = 32,
        normalize: bool = False,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray: ...


def per_text_instructions(instruction: Instruction, n: int) -> list[str | None]:
    """Expand ``instruction`` (None, one string, or one per text) to a list of length ``n``."""
    if instruction is None or isinstance(instruction, str):
        return [instruction] * n
    out = list(instruction)
    if len(out) != n:
        raise ValueError(f"got {len(out)} instructions for {n} texts; give one instruction or one per text")
    return out


class SentenceTransformerEncoder:
    """Adapts a ``sentence_transformers.SentenceTransformer`` to :class:`TextEncoder`.

    sentence-transformers takes the instruction as ``prompt=`` (one string for the whole call), so a list of
    per-text instructions is served by encoding each distinct instruction's texts together and putting the
    rows back in input order.
    """

    def __init__(self, model: Any, name: str | None = None) -> None:
        self.model = model
        self.name = name or type(model).__name__

    def encode(
        self,
        texts: Sequence[str],
        *,
        instruction: Instruction = None,
        batch_size: int = 32,
        normalize: bool = False,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        texts = list(texts)
        instructions = per_text_instructions(instruction, len(texts))
        groups: dict[str | None, list[int]] = {}
        for i, ins in enumerate(instructions):
            groups.setdefault(ins, []).append(i)
        out: np.ndarray | None = None
        for ins, idx in groups.items():
            emb = self.model.encode(
                [texts[i] for i in idx],
                prompt=ins or None,
                batch_size=batch_size,
                normalize_embeddings=normalize,
                show_progress_bar=bool(show_progress_bar),
                convert_to_numpy=True,
            )
            emb = np.asarray(emb, dtype=np.float32)
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
        if out is None:  # no texts: keep the (0, dim) shape callers expect
            dim = int(self.model.get_sentence_embedding_dimension() or 0)
            return np.zeros((0, dim), dtype=np.float32)
        return out


class EchoEncoder:
    """Echo embeddings (Springer et al., 2024) on top of a decoder2vec ``Encoder``.

    The first copy of each text goes into the per-text ``instruction``, which the core attends to but leaves
    out of pooling; the text itself follows as the second copy, so only the repeated tokens are pooled. A task
    instruction, when given, is put in front of the echo prompt so it is excluded from pooling too.
    """

    def __init__(self, encoder: TextEncoder, template: str = ECHO_TEMPLATE) -> None:
        if "{text}" not in template:
            raise ValueError("the echo template must contain '{text}' where the first copy goes")
        self.encoder = encoder
        self.template = template

    def echo_instructions(self, texts: Sequence[str], instruction: Instruction = None) -> list[str]:
        """The per-text prefix: optional task instruction, then the first copy inside the template."""
        task = per_text_instructions(instruction, len(texts))
        prefixes = []
        for text, ins in zip(texts, task, strict=True):
            echo = self.template.format(text=text)
            prefixes.append(f"{ins.rstrip()} {echo}" if ins else echo)
        return prefixes

    def encode(
        self,
        texts: Sequence[str],
        *,
        instruction: Instruction = None,
        batch_size: int = 32,
        normalize: bool = False,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        texts = list(texts)
        return self.encoder.encode(
            texts,
            instruction=self.echo_instructions(texts, instruction),
            batch_size=batch_size,
            normalize=normalize,
            show_progress_bar=show_progress_bar,
        )

    def __getattr__(self, name: str) -> Any:
        # model / tokenizer / tokenize stay reachable, so analyses can still look inside the wrapped encoder
        return getattr(self.encoder, name)
