"""The one sentence splitter: training sentences (``training/data/corpus.py``) and the chunker's sentence
boundaries (``encoding/chunking.py``, so also ``pairs``' passages and first sentences) both come from here.

A sentence ends at ``.``, ``!`` or ``?`` followed by whitespace and then a capital A-Z, a digit, a quote or
an opening parenthesis, unless the word ending there is a common abbreviation ("Mr.", "e.g.") or a single
initial ("J."). These are the SimCSE data's rules, kept exactly: the shipped recipes' training sentences
(and so the shipped encoder, BENCHMARKS.md "Reproduction") depend on them byte for byte, so any change here
changes the training data. The chunker adds line breaks (``line_breaks=True``), which end a paragraph
whatever precedes them.

Only ``re``: every layer may import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["ABBREVIATIONS", "sentence_starts", "split_sentences"]

# End punctuation, then the whitespace that may separate two sentences, then what may start one.
_CANDIDATE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_LINE_BREAK = re.compile(r"\n\s*")
_INITIAL = re.compile(r"[a-z]\.")
ABBREVIATIONS = frozenset(
    [
        "mr.",
        "mrs.",
        "ms.",
        "dr.",
        "st.",
        "jr.",
        "sr.",
        "prof.",
        "vs.",
        "no.",
        "c.",
        "ca.",
        "e.g.",
        "i.e.",
        "u.s.",
    ]
)
# The word before a candidate is only compared with ABBREVIATIONS and single initials, so a window this
# long tells every such word from a longer one without scanning back to the start of a long text.
_WORD_WINDOW = max(map(len, ABBREVIATIONS)) + 2


def _candidates(text: str) -> Iterator[tuple[int, int, bool]]:
    """``(start, end, ends a sentence)`` of each whitespace run that may separate two sentences."""
    for match in _CANDIDATE.finditer(text):
        start = match.start()
        before = text[max(0, start - _WORD_WINDOW) : start].split()  # (the punctuation is right before)
        word = before[-1].lower()
        yield start, match.end(), not (word in ABBREVIATIONS or _INITIAL.fullmatch(word))


def sentence_starts(text: str, *, line_breaks: bool = False) -> list[int]:
    """Character offsets where a sentence after the first starts (sorted); with ``line_breaks`` also the
    first non-whitespace character after each line break."""
    starts = {end for _, end, ends in _candidates(text) if ends}
    if line_breaks:
        starts.update(m.end() for m in _LINE_BREAK.finditer(text) if m.end() < len(text))
    return sorted(starts)


def split_sentences(text: str, min_words: int = 4) -> list[str]:
    """The sentences of ``text``, stripped, without those under ``min_words`` words. The whitespace after an
    abbreviation or initial is written as one space ("Mr.\\nSmith" -> "Mr. Smith"), as it always was."""
    sentences: list[str] = []
    parts: list[str] = []  # the current sentence's pieces, between rejected candidates
    begin = 0
    for start, end, ends in _candidates(text):
        parts.append(text[begin:start])
        if ends:
            sentences.append(" ".join(parts))
            parts = []
        begin = end
    parts.append(text[begin:])
    sentences.append(" ".join(parts))
    return [s.strip() for s in sentences if len(s.split()) >= min_words]
