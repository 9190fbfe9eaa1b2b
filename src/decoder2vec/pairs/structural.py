"""Pairs a corpus gives for free (E5-style structure): each kind switchable, each its own ``task``.

* ``title``: a document's title -> each of its passages;
* ``first_sentence``: a passage's first sentence -> the rest of the passage;
* ``neighbour``: a passage -> the next passage of the same document;
* ``title_document`` (long pairs): a title -> the whole document, up to ``long_tokens`` tokens.

Every pair names its *anchor* passage (the passage it was cut from; for ``title_document`` the
document's first passage): negatives are never drawn from the anchor's document, and the round-trip
filter and the negatives' margin score the query against the anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

from decoder2vec.pairs.passages import Passage, first_sentence, passages_by_doc
from decoder2vec.pairs.sources import Document

STRUCTURAL_KINDS = ("title", "first_sentence", "neighbour", "title_document")
SYNTHETIC_KINDS = ("question", "keywords", "claim")
KINDS = SYNTHETIC_KINDS + STRUCTURAL_KINDS

INSTRUCTIONS = {
    "question": "Given a question, retrieve passages that answer the question",
    "keywords": "Given a web search query, retrieve relevant passages that answer the query",
    "claim": "Given a claim, retrieve passages that support it",
    "title": "Given a title, retrieve the passage",
    "first_sentence": "Given the first sentence of a passage, retrieve the rest of the passage",
    "neighbour": "Given a passage, retrieve the passage that follows it in the same document",
    "title_document": "Given a title, retrieve the document",
}


@dataclass(frozen=True)
class Pair:
    kind: str
    query: str
    positive: str
    anchor: int  # index into the passages list
    doc: int


def structural_pairs(
    docs: list[Document], passages: list[Passage], kinds: tuple[str, ...], long_document=None
) -> list[Pair]:
    """The structural pairs of ``kinds`` in document order. ``long_document(text) -> text`` cuts a whole
    document to the long-pair length (tokens)."""
    pairs: list[Pair] = []
    for d, indices in passages_by_doc(passages).items():
        title = docs[d].title.strip()
        if "title_document" in kinds and title and long_document is not None:
            pairs.append(Pair("title_document", title, long_document(docs[d].text), indices[0], d))
        for n, i in enumerate(indices):
            text = passages[i].text
            if "title" in kinds and title:
                pairs.append(Pair("title", title, text, i, d))
            if "first_sentence" in kinds and (split := first_sentence(text)):
                pairs.append(Pair("first_sentence", split[0], split[1], i, d))
            if "neighbour" in kinds and n + 1 < len(indices):
                pairs.append(Pair("neighbour", text, passages[indices[n + 1]].text, indices[n + 1], d))
    return pairs
