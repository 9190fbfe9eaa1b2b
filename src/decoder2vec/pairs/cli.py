"""``decoder2vec pairs CORPUS --out DIR``: retrieval training pairs from a corpus (docs/pairs.md)."""

# No `from __future__ import annotations`: typer reads the Annotated options at runtime.
from pathlib import Path
from typing import Annotated

import typer

from decoder2vec.cli_common import reports_errors


def _kinds(value: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in value.split(",") if k.strip() and k.strip() != "none")


@reports_errors
def pairs_command(
    corpus: Annotated[
        list[str],
        typer.Argument(help="wiki (the train 80% of the offline leads), wiki:heldout, wiki:all, or files."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    text_field: Annotated[str, typer.Option(help="Text field / column of JSONL and Parquet.")] = "text",
    title_field: Annotated[str, typer.Option(help="Title field (optional per record).")] = "title",
    id_field: Annotated[str, typer.Option(help="Document id field.")] = "id",
    limit: Annotated[int | None, typer.Option(help="Use the first N documents only.")] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Model whose tokenizer cuts passages (default: --generator).")
    ] = None,
    chunking: Annotated[str, typer.Option(help="sentences or tokens.")] = "sentences",
    chunk_size: Annotated[int, typer.Option(help="Passage length in tokens.")] = 128,
    overlap: Annotated[int, typer.Option(help="Tokens shared by consecutive passages.")] = 0,
    min_passage_words: Annotated[int, typer.Option(help="Shorter passages are dropped.")] = 20,
    structural: Annotated[
        str, typer.Option(help="title,first_sentence,neighbour,title_document (comma list, or none).")
    ] = "title,first_sentence,neighbour",
    long_tokens: Annotated[int, typer.Option(help="title_document: document cut to N tokens.")] = 1024,
    generator: Annotated[
        str, typer.Option(help="Instruct decoder writing queries: alias, folder or .gguf.")
    ] = "smollm2-135m",
    backend: Annotated[str, typer.Option(help="transformers or llama.cpp.")] = "transformers",
    templates: Annotated[
        str, typer.Option(help="question,keywords,claim (comma list, or none).")
    ] = "question",
    queries_per_passage: Annotated[int, typer.Option("--k", help="Queries per passage and template.")] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")] = 0.5,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per query at most.")] = 48,
    generation_batch_size: Annotated[int, typer.Option(help="Prompts per generate call.")] = 16,
    shard_size: Annotated[int, typer.Option(help="Passages per generated shard (resume unit).")] = 64,
    min_query_words: Annotated[int, typer.Option()] = 3,
    max_query_words: Annotated[int, typer.Option()] = 32,
    copy_words: Annotated[
        int, typer.Option(help="Drop a query sharing this many consecutive words with its passage.")
    ] = 8,
    filter_model: Annotated[
        str, typer.Option(help="Round-trip filter: bm25, an encoder alias/folder, or none.")
    ] = "bm25",
    round_trip_k: Annotated[int, typer.Option(help="Keep a query if its passage ranks in the top k.")] = 3,
    miner: Annotated[str, typer.Option(help="Negatives: bm25, an encoder alias/folder, or none.")] = "bm25",
    negatives: Annotated[int, typer.Option(help="Hard negatives per pair.")] = 1,
    skip_top: Annotated[int, typer.Option(help="Skip the top r candidates.")] = 0,
    margin: Annotated[float, typer.Option(help="Drop candidates scoring >= margin x the positive.")] = 0.95,
    keep_short: Annotated[
        bool, typer.Option("--keep-short/--drop-short", help="Pairs with too few negatives: keep or drop.")
    ] = False,
    dev_fraction: Annotated[float, typer.Option(help="Documents in the dev split.")] = 0.1,
    dev_titles: Annotated[
        bool, typer.Option("--dev-titles", help="Dev titles are dev queries too (runs without --templates).")
    ] = False,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[int, typer.Option(help="CPU threads for generation.")] = 2,
    device: Annotated[
        str | None,
        typer.Option(help="Generation device: cpu, cuda, cuda:N (default: a GPU if there is one)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a previous run's files (only those it wrote).")
    ] = False,
) -> None:
    """Build retrieval training pairs: structural pairs, synthetic queries, round-trip filter, hard negatives."""
    from decoder2vec.pairs import PairsSettings, build_pairs

    settings = PairsSettings(
        sources=list(corpus),
        text_field=text_field,
        title_field=title_field,
        id_field=id_field,
        limit=limit,
        tokenizer=tokenizer,
        chunking=chunking,
        chunk_size=chunk_size,
        overlap=overlap,
        min_passage_words=min_passage_words,
        structural=_kinds(structural),
        long_tokens=long_tokens,
        generator=generator,
        backend=backend,
        templates=_kinds(templates),
        queries_per_passage=queries_per_passage,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        generation_batch_size=generation_batch_size,
        shard_size=shard_size,
        min_query_words=min_query_words,
        max_query_words=max_query_words,
        copy_words=copy_words,
        filter_model=None if filter_model == "none" else filter_model,
        round_trip_k=round_trip_k,
        miner=miner,
        negatives=negatives,
        skip_top=skip_top,
        margin=margin,
        keep_short=keep_short,
        dev_fraction=dev_fraction,
        dev_titles=dev_titles,
        seed=seed,
        threads=threads,
        device=device,
        overwrite=overwrite,
    )
    manifest = build_pairs(out, settings)
    c = manifest["counts"]
    typer.echo(
        f"{sum(c['train_pairs'].values())} training pairs {c['train_pairs']}, {c['dev']['queries']} dev queries; "
        f"generated {c['generated']}, kept {c['kept']}, dropped {c['dropped']} -> {out}"
    )
