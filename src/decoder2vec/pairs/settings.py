"""``PairsSettings``: every setting of a ``decoder2vec pairs`` run, in a module without heavy imports so that
``convert``'s pipeline settings (training/settings.py) can hold them as its ``pairs`` section."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

# Settings that do not change the output (a resume may change them).
RUNTIME = ("threads", "progress", "overwrite", "encode_batch_size")


@dataclass
class PairsSettings:
    sources: list[str]
    text_field: str = "text"
    title_field: str = "title"
    id_field: str = "id"
    limit: int | None = None
    # passages
    tokenizer: str | None = None  # default: the generator's
    chunking: str = "sentences"
    chunk_size: int = 128
    overlap: int = 0
    min_passage_words: int = 20
    # structural pairs
    structural: tuple[str, ...] = ("title", "first_sentence", "neighbour")
    long_tokens: int = 1024
    # synthetic queries
    generator: str = "smollm2-135m"
    backend: str = "transformers"
    templates: tuple[str, ...] = ("question",)
    queries_per_passage: int = 1
    temperature: float = 0.5
    max_new_tokens: int = 48
    generation_batch_size: int = 16
    # cpu, cuda, cuda:N or None (a GPU when there is one); bf16 on a GPU. Part of the recorded settings:
    # GPU bf16 sampling writes other queries than CPU fp32.
    device: str | None = None
    shard_size: int = 64
    min_query_words: int = 3
    max_query_words: int = 32
    copy_words: int = 8
    # round trip
    filter_model: str | None = "bm25"  # None: no round-trip filter
    round_trip_k: int = 3
    # negatives
    miner: str = "bm25"  # bm25 or an encoder alias / folder; "none": no negatives
    negatives: int = 1
    skip_top: int = 0
    margin: float = 0.95
    keep_short: bool = False  # keep pairs with fewer than `negatives` negatives (else dropped)
    # split
    dev_fraction: float = 0.1
    # Each dev document's title also becomes a dev query, relevant to all the document's passages: a dev
    # split for runs without synthetic queries (a CPU run with --templates none), whose dev has none else.
    dev_titles: bool = False
    seed: int = 0
    # runtime
    threads: int = 2
    encode_batch_size: int = 32
    progress: bool = True
    overwrite: bool = False

    def recorded(self) -> dict:
        d = asdict(self)
        for key in RUNTIME:
            d.pop(key)
        return json.loads(json.dumps(d))  # tuples as lists, as the manifest reads back
