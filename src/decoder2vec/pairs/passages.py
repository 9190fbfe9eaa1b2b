"""Passages: each document cut by the project's one chunker (``encoding/chunking.split_documents``).

Documents whose every chunk is under ``min_words`` words yield no passage; they are counted
(``documents_too_short``), and a corpus where no document yields one is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from decoder2vec.errors import InputError
from decoder2vec.pairs.sources import Document


@dataclass(frozen=True)
class Passage:
    doc: int  # index of its document
    index: int  # position in its document
    text: str

    @property
    def key(self) -> str:
        return f"{self.doc}:{self.index}"


def cut_passages(
    builder, docs: list[Document], *, chunking: str, chunk_size: int, overlap: int, min_words: int
) -> tuple[list[Passage], int]:
    """``(passages, documents without a passage)``; ``builder`` is the tokenizer's SequenceBuilder."""
    from decoder2vec.encoding.chunking import split_documents

    try:
        chunked = split_documents(
            builder,
            [d.text for d in docs],
            chunking=chunking,
            chunk_size=chunk_size,
            overlap=overlap,
            name=lambda i: f"document {docs[i].id!r}",
        )
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None
    passages, too_short = [], 0
    for d, doc in enumerate(chunked):
        kept = [t for t in doc.chunk_texts() if len(t.split()) >= min_words]
        passages += [Passage(d, i, t) for i, t in enumerate(kept)]
        too_short += not kept
    if not passages:
        raise InputError(
            f"no document yields a passage of at least {min_words} words ({len(docs)} documents, all too "
            "short); lower --min-passage-words or pass longer documents"
        )
    return passages, too_short


def passages_by_doc(passages: list[Passage]) -> dict[int, list[int]]:
    """Each document's passage indices, in passage order (documents in order of first passage)."""
    by_doc: dict[int, list[int]] = {}
    for i, p in enumerate(passages):
        by_doc.setdefault(p.doc, []).append(i)
    return by_doc


def first_sentence(text: str) -> tuple[str, str] | None:
    """``(first sentence, rest)`` by the chunker's sentence boundaries, or None for a single sentence."""
    from decoder2vec.encoding.chunking import sentence_starts

    starts = sentence_starts(text)
    if not starts:
        return None
    head, rest = text[: starts[0]].strip(), text[starts[0] :].strip()
    return (head, rest) if head and rest else None
