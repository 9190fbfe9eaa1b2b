"""Documents for ``decoder2vec pairs``: the offline Wikipedia leads (by split) or files of records.

Sources:

* ``wiki`` (= ``wiki:train``), ``wiki:heldout``, ``wiki:all``: the English leads of the offline Wikipedia
  package, split by document (``wiki.py``: SHA-256 of the title, 20% held out). Only
  ``title`` and ``extract`` are read. ``wiki`` means the *train* split here, so training data never comes
  from the held-out 20% that evaluation uses (SimCSE/MNTP's ``wiki`` source is unchanged: every lead);
* text files (one document per line), JSONL or Parquet files (globs allowed), read by the one corpus
  reader (``corpus/inputs.py``) with configurable text / title / id fields.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from decoder2vec.errors import InputError

WIKI_SOURCES = {"wiki": "train", "wiki:train": "train", "wiki:heldout": "heldout", "wiki:all": "all"}


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclass
class Documents:
    docs: list[Document]
    fingerprint: str  # SHA-256 over every document read (a resume with other inputs is refused)
    files: list[dict]  # inputs as the manifest records them


def _fingerprint(docs: list[Document]) -> str:
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(f"{doc.id}\0{doc.title}\0{doc.text}\0".encode())
    return digest.hexdigest()


def read_documents(
    sources: list[str],
    *,
    text_field: str = "text",
    title_field: str = "title",
    id_field: str = "id",
    limit: int | None = None,
) -> Documents:
    """The documents of ``sources`` (one wiki source, or files), the first ``limit`` of them."""
    if not sources:
        raise InputError("no corpus given: pass wiki, wiki:heldout, wiki:all, or JSONL/Parquet/text files")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be positive, got {limit}")
    wiki = [s for s in sources if s in WIKI_SOURCES or s.startswith("wiki:")]
    if wiki:
        if len(sources) > 1:
            raise InputError(f"the wiki source {wiki[0]!r} cannot be combined with other inputs")
        if wiki[0] not in WIKI_SOURCES:
            raise InputError(f"unknown wiki source {wiki[0]!r}; use one of {', '.join(WIKI_SOURCES)}")
        from decoder2vec.wiki import wiki_leads

        leads = wiki_leads(split=WIKI_SOURCES[wiki[0]])
        docs = [Document(title, title, text) for title, text in leads]
        files = [{"path": wiki[0], "records": len(docs)}]
    else:
        from decoder2vec.corpus.inputs import read_corpus

        corpus = read_corpus(sources, text_field=text_field, id_field=id_field, title_field=title_field)
        docs = [Document(i, t, x) for i, t, x in zip(corpus.ids, corpus.titles, corpus.texts)]
        files = [f.as_dict() for f in corpus.files]
    if not docs:
        raise InputError(f"corpus {' '.join(sources)} is empty (no document with text)")
    docs = docs[:limit] if limit else docs
    return Documents(docs, _fingerprint(docs), files)
