"""``build_pairs``: documents -> passages -> structural + synthetic pairs -> filters -> negatives -> files.

Output folder (see docs/pairs.md): ``train.jsonl`` (the supervised stage's format), ``dev/`` (a BEIR
folder), ``manifest.json`` (settings, counts, drops by reason, model hashes) and ``generated/`` (the
raw generations, one JSONL shard per ``shard_size`` passages, each written atomically as it finishes).
A rerun of the same command reuses the finished shards, so an interrupted run resumes and ends with the
same files as an uninterrupted one; a rerun with other settings is refused, naming each difference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from decoder2vec.errors import ConfigError, InputError, OutputExistsError
from decoder2vec.io import iter_jsonl, replace_folder, write_file_atomic, write_json_atomic
from decoder2vec.pairs.filters import filter_generated, round_trip_keep
from decoder2vec.pairs.generate import TEMPLATES, generator_weights, load_generator, messages, resolve_backend
from decoder2vec.pairs.negatives import mine_negatives
from decoder2vec.pairs.passages import cut_passages, passages_by_doc
from decoder2vec.pairs.scoring import load_scorer
from decoder2vec.pairs.settings import PairsSettings
from decoder2vec.pairs.sources import read_documents
from decoder2vec.pairs.structural import INSTRUCTIONS, STRUCTURAL_KINDS, Pair, structural_pairs

log = logging.getLogger(__name__)

FORMAT = "decoder2vec-pairs/1"
MANIFEST, TRAIN, DEV, GENERATED = "manifest.json", "train.jsonl", "dev", "generated"
OWNED = (MANIFEST, TRAIN, DEV, GENERATED)


def check_settings(s: PairsSettings) -> None:
    """Every flag's value, before any file is read or model loaded."""
    from decoder2vec.encoding.chunking import check_chunk_options

    try:
        check_chunk_options(s.chunking, s.chunk_size, s.overlap)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--chunking/--chunk-size/--overlap: {exc}") from None
    for flag, kinds, allowed in (
        ("--structural", s.structural, STRUCTURAL_KINDS),
        ("--templates", s.templates, TEMPLATES),
    ):
        bad = [k for k in kinds if k not in allowed]
        if bad:
            raise ConfigError(f"{flag}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    positive = {
        "--queries-per-passage": s.queries_per_passage,
        "--shard-size": s.shard_size,
        "--round-trip-k": s.round_trip_k,
        "--max-new-tokens": s.max_new_tokens,
        "--generation-batch-size": s.generation_batch_size,
        "--threads": s.threads,
        "--min-query-words": s.min_query_words,
        "--copy-words": s.copy_words,
        "--long-tokens": s.long_tokens,
    }
    for flag, value in positive.items():
        if value < 1:
            raise ConfigError(f"{flag} must be positive, got {value}")
    if s.max_query_words < s.min_query_words:
        raise ConfigError(f"--max-query-words {s.max_query_words} is under --min-query-words")
    if s.negatives < 0 or s.skip_top < 0 or s.min_passage_words < 0:
        raise ConfigError("--negatives, --skip-top and --min-passage-words must not be negative")
    if not 0 < s.margin <= 1:
        raise ConfigError(f"--margin must be in (0, 1], got {s.margin}")
    if not 0 <= s.dev_fraction < 1:
        raise ConfigError(f"--dev-fraction must be in [0, 1), got {s.dev_fraction}")
    if s.temperature < 0:
        raise ConfigError(f"--temperature must not be negative, got {s.temperature}")
    if not s.templates and not s.structural:
        raise ConfigError("nothing to make: no --templates and no --structural kinds")
    if s.templates:
        resolve_backend(s.backend, s.generator)


# ------------------------------------------------------------------ output folder
def check_out(out: Path, settings: PairsSettings) -> dict | None:
    """The folder's manifest when it is a resumable run of these settings; refuses anything else."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputExistsError(f"--out {out} is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return None
    path = out / MANIFEST
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("format") != FORMAT:
            raise ValueError
    except (OSError, ValueError, AttributeError):
        raise OutputExistsError(
            f"--out {out} is not empty and holds no {MANIFEST} written by `decoder2vec pairs`; "
            "choose a new or empty folder (nothing was changed)"
        ) from None
    for name in OWNED:
        if (out / name).is_symlink():
            raise OutputExistsError(f"{out / name} is a symbolic link decoder2vec did not make; remove it")
    new = settings.recorded()
    # a setting added after the run was made reads as its default, so older runs still resume
    before = {**PairsSettings(sources=[]).recorded(), **old["settings"]}
    differences = [f"{k} {before.get(k)!r} (now {new[k]!r})" for k in new if before.get(k) != new[k]]
    if not differences:
        return old
    if not settings.overwrite:
        raise OutputExistsError(
            f"--out {out} holds pairs made with other settings: {'; '.join(differences)}. Nothing was "
            "changed; rerun with the same settings to resume, use another --out, or pass --overwrite"
        )
    for name in OWNED:  # only what `pairs` wrote; anything else in the folder stays
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    return None


def file_sha256(paths: list[Path]) -> dict[str, str]:
    out = {}
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        out[path.name] = digest.hexdigest()
    return out


def model_hashes(name: str | None, backend: str | None = None) -> dict | None:
    if name in (None, "bm25", "none"):
        return None
    from decoder2vec.backbone.loading import resolve_model_path
    from decoder2vec.pairs.generate import weight_files

    files = generator_weights(name, backend) if backend else weight_files(resolve_model_path(name))
    return {"name": name, **({"backend": backend} if backend else {}), "sha256": file_sha256(files)}


def in_dev(doc_id: str, seed: int, fraction: float) -> bool:
    value = int.from_bytes(hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()[:8], "big")
    return value < fraction * 2**64


# ------------------------------------------------------------------ generation
def generate_shards(out: Path, s: PairsSettings, passages, threads: int) -> list[dict]:
    """All raw generations, shard by shard; finished shards are read back, missing ones generated."""
    folder = out / GENERATED
    folder.mkdir(parents=True, exist_ok=True)
    n_shards = -(-len(passages) // s.shard_size)
    generator, records = None, []
    bar = tqdm(range(n_shards), desc="generating queries", unit="shard", disable=not s.progress)
    for shard in bar:
        path = folder / f"shard-{shard:05d}.jsonl"
        if path.is_file():
            records += [r for _, r in iter_jsonl(path)]
            continue
        if generator is None:
            generator = load_generator(
                s.generator,
                s.backend,
                threads=threads,
                batch_size=s.generation_batch_size,
                max_new_tokens=s.max_new_tokens,
                device=s.device,
            )
        start = shard * s.shard_size
        jobs = [
            (i, t, j)
            for i in range(start, min(start + s.shard_size, len(passages)))
            for t in s.templates
            for j in range(s.queries_per_passage)
        ]
        raw = generator.generate(
            [messages(t, passages[i].text) for i, t, _ in jobs],
            seed=s.seed * 1_000_003 + shard * 10_007,
            temperature=s.temperature,
        )
        rows = [{"passage": i, "template": t, "sample": j, "raw": r} for (i, t, j), r in zip(jobs, raw)]
        write_file_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        records += rows
    return records


# ------------------------------------------------------------------ the run
def passage_builder(s: PairsSettings):
    """The SequenceBuilder passages are cut with: the tokenizer of ``s.tokenizer`` (default: the
    generator's), long enough for a whole-document pair."""
    from decoder2vec.backbone.loading import load_tokenizer, resolve_model_path
    from decoder2vec.encoding.tokenization import SequenceBuilder

    tokenizer = load_tokenizer(resolve_model_path(s.tokenizer or s.generator))
    return SequenceBuilder(tokenizer, max_length=max(s.long_tokens, s.chunk_size) + 8)


def settings_passages(docs, s: PairsSettings, builder=None):
    """``(passages, documents too short for one)``: ``docs`` cut as the settings say."""
    return cut_passages(
        builder or passage_builder(s),
        docs,
        chunking=s.chunking,
        chunk_size=s.chunk_size,
        overlap=s.overlap,
        min_words=s.min_passage_words,
    )


def build_pairs(out: str | Path, s: PairsSettings) -> dict:
    """Run everything into ``out``; returns the manifest."""
    out = Path(out).expanduser()
    check_settings(s)
    check_out(out, s)
    documents = read_documents(
        s.sources, text_field=s.text_field, title_field=s.title_field, id_field=s.id_field, limit=s.limit
    )
    docs = documents.docs
    dev_docs = np.array([in_dev(d.id, s.seed, s.dev_fraction) for d in docs])

    builder = passage_builder(s)
    tokenizer = builder.tokenizer
    passages, too_short = settings_passages(docs, s, builder)
    passage_docs = np.array([p.doc for p in passages])
    if s.dev_fraction > 0 and not dev_docs[passage_docs].any():
        raise InputError(
            f"the dev split has no document with a passage ({len(docs)} documents, --dev-fraction "
            f"{s.dev_fraction}, --seed {s.seed}); raise --dev-fraction, pass more documents, or use 0"
        )

    manifest = {
        "format": FORMAT,
        "settings": s.recorded(),
        "inputs": {"files": documents.files, "sha256": documents.fingerprint},
        "complete": False,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / MANIFEST, manifest)

    # synthetic queries
    drops: Counter = Counter()
    generated = generate_shards(out, s, passages, s.threads) if s.templates else []
    kept = filter_generated(
        generated,
        passages,
        min_words=s.min_query_words,
        max_words=s.max_query_words,
        copy_words=s.copy_words,
        drops=drops,
    )
    scorers: dict[str, object] = {}

    def scorer(name: str):
        if name not in scorers:
            scorers[name] = load_scorer(name, [p.text for p in passages], batch_size=s.encode_batch_size)
        return scorers[name]

    if s.filter_model and kept:
        sc = scorer(s.filter_model)
        q = sc.queries([r["query"] for r in kept], [INSTRUCTIONS[r["template"]] for r in kept])
        mask = round_trip_keep(sc, q, np.array([r["passage"] for r in kept]), s.round_trip_k)
        drops["round_trip"] += int((~mask).sum())
        kept = [r for r, m in zip(kept, mask) if m]
    synthetic = [
        Pair(r["template"], r["query"], passages[r["passage"]].text, r["passage"], passages[r["passage"]].doc)
        for r in kept
    ]

    # structural pairs
    def long_document(text: str) -> str:
        ids = builder.token_ids([text])[0][: s.long_tokens]
        return tokenizer.decode(ids).strip()

    structural = structural_pairs(docs, passages, tuple(s.structural), long_document)
    pairs = sorted(synthetic + structural, key=lambda p: (p.doc, p.anchor))

    # split, negatives, files
    train = [p for p in pairs if not dev_docs[p.doc]]
    # dev queries: (text, relevant passages)
    dev_queries = [(p.query, [p.anchor]) for p in synthetic if dev_docs[p.doc]]
    if s.dev_titles:
        dev_queries += [
            (docs[d].title.strip(), anchors)
            for d, anchors in sorted(passages_by_doc(passages).items())
            if dev_docs[d] and docs[d].title.strip()
        ]
    negatives = [[] for _ in train]
    short = 0
    if s.negatives and s.miner != "none" and train:
        sc = scorer(s.miner)
        q = sc.queries([p.query for p in train], [INSTRUCTIONS[p.kind] for p in train])
        negatives = mine_negatives(
            sc,
            q,
            np.array([p.anchor for p in train]),
            np.array([p.doc for p in train]),
            passage_docs,
            ~dev_docs,
            n=s.negatives,
            skip=s.skip_top,
            margin=s.margin,
        )
        short = sum(len(n) < s.negatives for n in negatives)
    lines, per_kind = [], Counter()
    for pair, negs in zip(train, negatives):
        if s.negatives and s.miner != "none" and len(negs) < s.negatives and not s.keep_short:
            continue
        per_kind[pair.kind] += 1
        record = {
            "query": pair.query,
            "positive": pair.positive,
            "negatives": [passages[i].text for i in negs],
            "instruction": INSTRUCTIONS[pair.kind],
            "task": pair.kind,
            **({"symmetric": True} if pair.kind == "neighbour" else {}),
            "passage": f"{docs[pair.doc].id}#{passages[pair.anchor].index}",
        }
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    if not lines:
        raise InputError(
            "no training pair survived (see the drops in the log); relax the filters or pass more documents"
        )
    write_file_atomic(out / TRAIN, "".join(lines))
    dev = write_dev(out, s, docs, passages, dev_docs, dev_queries)

    if short:
        verb = "kept with fewer" if s.keep_short else "dropped"
        warnings.warn(f"{short} pairs had fewer than {s.negatives} negatives and were {verb}", stacklevel=2)
    if generated and not kept:
        warnings.warn(f"all {len(generated)} generated queries were dropped: {dict(drops)}", stacklevel=2)
    manifest.update(
        {
            "counts": {
                "documents": len(docs),
                "documents_too_short": too_short,
                "passages": len(passages),
                "generated": len(generated),
                "kept": len(kept),
                "dropped": dict(sorted(drops.items())),
                "pairs": dict(sorted(Counter(p.kind for p in pairs).items())),
                "train_pairs": dict(sorted(per_kind.items())),
                "negatives": {
                    "per_pair": s.negatives,
                    "short_pairs": short,
                    "short_policy": "kept" if s.keep_short else "dropped",
                    "mined": int(sum(len(n) for n in negatives)),
                },
                "dev": dev,
            },
            "models": {
                "tokenizer": model_hashes(s.tokenizer or s.generator),
                "generator": model_hashes(s.generator, s.backend) if s.templates else None,
                "filter": model_hashes(s.filter_model),
                "miner": model_hashes(s.miner),
            },
            "complete": True,
        }
    )
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def write_dev(out: Path, s: PairsSettings, docs, passages, dev_docs, dev_queries) -> dict:
    """The dev split as a BEIR folder: synthetic queries of dev documents (and their titles, with
    ``dev_titles``) against every dev passage. ``dev_queries``: (query, relevant passage indices)."""
    dev_passages = [i for i, p in enumerate(passages) if dev_docs[p.doc]]
    counts = {"documents": int(dev_docs.sum()), "corpus": len(dev_passages), "queries": len(dev_queries)}
    if s.dev_fraction == 0:
        return counts
    if not dev_queries:
        warnings.warn("the dev split has no query left after filtering; dev/ is not written", stacklevel=2)
        return counts
    pid = lambda i: f"{docs[passages[i].doc].id}#{passages[i].index}"

    def build(folder: Path) -> None:
        corpus = [
            {"_id": pid(i), "title": docs[passages[i].doc].title, "text": passages[i].text}
            for i in dev_passages
        ]
        queries = [{"_id": f"q{n}", "text": q} for n, (q, _) in enumerate(dev_queries)]
        qrels = "query-id\tcorpus-id\tscore\n" + "".join(
            f"q{n}\t{pid(i)}\t1\n" for n, (_, relevant) in enumerate(dev_queries) for i in relevant
        )
        dump = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (folder / "corpus.jsonl").write_text(dump(corpus), encoding="utf-8")
        (folder / "queries.jsonl").write_text(dump(queries), encoding="utf-8")
        (folder / "qrels").mkdir()
        (folder / "qrels" / "dev.tsv").write_text(qrels, encoding="utf-8")

    replace_folder(out / DEV, build)
    return counts
