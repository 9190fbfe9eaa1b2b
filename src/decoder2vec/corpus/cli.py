"""``decoder2vec embed-corpus``: embed files of texts into resumable Parquet shards (local or Ray)."""

# No `from __future__ import annotations`: typer reads the Annotated options at runtime.
import logging
from pathlib import Path
from typing import Annotated

import typer

from decoder2vec.backbone.default_model import DEFAULT_ENCODER
from decoder2vec.cli_common import DtypeOption, ModelOption, QuantizationOption, reports_errors


@reports_errors
def embed_corpus(
    inputs: Annotated[
        list[str], typer.Argument(help="JSONL, Parquet or text files (one text per line); globs allowed.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder of Parquet shards and manifest.json.")
    ],
    model: ModelOption = DEFAULT_ENCODER,
    field: Annotated[
        str, typer.Option(help="Text field of JSONL records / column of Parquet files.")
    ] = "text",
    id_field: Annotated[str, typer.Option(help="Id field; records without it get file:line.")] = "id",
    instruction: Annotated[str | None, typer.Option(help="Instruction attended to but not pooled.")] = None,
    normalize: Annotated[bool, typer.Option("--normalize", help="L2-normalise the embeddings.")] = False,
    dimensions: Annotated[
        int | None,
        typer.Option(
            help="Keep the first N dimensions (Matryoshka truncation; normalised after if --normalize)."
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="float32, int8 or uint8 (calibrated, see docs/corpus.md), binary or ubinary (bit-packed)."
        ),
    ] = "float32",
    pooling: Annotated[str | None, typer.Option(help="mean, weighted_mean, last_token or bos.")] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Token limit per text (default: the model's).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 32,
    shard_size: Annotated[
        int, typer.Option(help="Texts per Parquet shard (the unit of resumption).")
    ] = 10_000,
    engine: Annotated[str, typer.Option(help="local (one process) or ray (Ray Data actors).")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster to join ('auto', 'ray://head:10001'); default: start one.")
    ] = None,
    num_workers: Annotated[int, typer.Option(help="Ray encoder actors (one per GPU on a GPU cluster).")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per Ray actor (0: CPU only).")] = 0.0,
    threads_per_worker: Annotated[int, typer.Option(help="CPU threads (and Ray CPUs) per Ray actor.")] = 1,
    chunking: Annotated[
        str | None,
        typer.Option(
            help="late or naive: a row per chunk of each document (late: chunks pooled from one forward over "
            "the whole document, up to the model's context; naive: each chunk embedded alone). Default: a "
            "row per document, cut at --max-length."
        ),
    ] = None,
    chunk_by: Annotated[
        str | None,
        typer.Option(help="With --chunking: sentences (default; grouped up to --chunk-size) or tokens."),
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option(help="With --chunking: tokens per chunk (default 256).")
    ] = None,
    chunk_overlap: Annotated[
        int | None, typer.Option(help="With --chunking: tokens shared by consecutive chunks (default 0).")
    ] = None,
    dtype: DtypeOption = None,
    quantization: QuantizationOption = None,
) -> None:
    """Embed a corpus into Parquet shards; re-running the same command resumes after a crash."""
    from decoder2vec.corpus.pipeline import embed_corpus_files

    if engine == "ray":
        # Ray Data logs each execution at INFO; our progress bar and summary say what matters.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    result = embed_corpus_files(
        inputs,
        out,
        model=model,
        field=field,
        id_field=id_field,
        instruction=instruction,
        normalize=normalize,
        dimensions=dimensions,
        precision=precision,
        pooling=pooling,
        max_length=max_length,
        batch_size=batch_size,
        shard_size=shard_size,
        engine=engine,
        ray_address=ray_address,
        num_workers=num_workers,
        gpus_per_worker=gpus_per_worker,
        threads_per_worker=threads_per_worker,
        chunking=chunking,
        chunk_by=chunk_by,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        dtype=dtype,
        quantization=quantization,
    )
    skipped = f" ({result.skipped_shards} already done)" if result.skipped_shards else ""
    stored = ""
    if result.precision != "float32":
        stored = f" as {result.precision} ({result.columns} {result.dtype} values each)"
    if result.chunks is not None:
        typer.echo(
            f"wrote {result.chunks} chunk embeddings of {result.rows} documents, dimension {result.dimension}"
            f"{stored}, in {result.shards} shards{skipped} to {result.out}"
        )
        return
    typer.echo(
        f"wrote {result.rows} embeddings of dimension {result.dimension}{stored} in {result.shards} shards"
        f"{skipped} to {result.out}"
    )
