"""One corpus run: validate inputs, check the output folder, then embed the pending shards with an engine.

Order matters for the guarantees: inputs and options are validated and the folder's manifest compared
before any model loads; the manifest is written before the first shard; a shard is skipped only if its
file matches the record written when it was finished (see shards.py); ``complete`` is set after the last.

Compact output (``--dimensions``, ``--precision``) is computed by ``Encoder.encode`` itself. int8/uint8
need per-dimension ranges: from the encoder's saved calibration sample, else from a sample of the corpus;
they are kept in the manifest (``calibration``), so every shard, worker and resumed run quantizes alike.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from decoder2vec.backbone.default_model import DEFAULT_ENCODER
from decoder2vec.backbone.loading import resolve_device, resolve_dtype
from decoder2vec.backbone.precision import check_inference_precision
from decoder2vec.corpus.chunks import check_chunked_corpus, chunk_options, chunk_settings
from decoder2vec.corpus.compact import (
    CALIBRATED,
    Calibration,
    calibration_rows,
    check_precision_option,
    encode_options,
    model_ranges,
    output_shape,
)
from decoder2vec.corpus.inputs import Corpus, read_corpus
from decoder2vec.corpus.manifest import (
    ADDED_DEFAULTS,
    FORMAT,
    INPUT_SETTINGS,
    MANIFEST,
    MODEL_SETTINGS,
    check_same_run,
    new_manifest,
    read_manifest,
    write_manifest,
)
from decoder2vec.corpus.model_info import check_encoder, describe_model, model_identity
from decoder2vec.corpus.progress import ShardProgress
from decoder2vec.corpus.shards import (
    DATA_DIR,
    DONE_DIR,
    adopt_old_layout,
    manifest_layout_is_old,
    pending_shards,
    plan_shards,
    recorded_chunks,
    remove_partial_files,
)
from decoder2vec.encoding.compact import check_ranges
from decoder2vec.errors import ConfigError
from decoder2vec.io import check_inside

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class CorpusResult:
    out: Path
    rows: int
    dimension: int  # of the output: --dimensions, else the model's
    shards: int
    skipped_shards: int
    precision: str = "float32"
    columns: int = 0  # values per stored embedding (dimension / 8 for the packed binary precisions)
    dtype: str = "float32"  # of the stored values
    chunks: int | None = None  # rows written by a --chunking run (one per chunk; ``rows`` counts documents)


def embed_corpus_files(
    inputs: list[str],
    out: str | Path,
    *,
    model: str = DEFAULT_ENCODER,
    field: str = "text",
    id_field: str = "id",
    instruction: str | None = None,
    normalize: bool = False,
    dimensions: int | None = None,
    precision: str = "float32",
    pooling: str | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    shard_size: int = 10_000,
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    threads_per_worker: int = 1,
    show_progress: bool | None = None,
    chunking: str | None = None,
    chunk_by: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    dtype: str | None = None,
    quantization: str | None = None,
) -> CorpusResult:
    """Embed every record of ``inputs`` into Parquet shards under ``out``, resuming a previous run.

    With ``chunking`` (``"late"`` or ``"naive"``), each document is split (``chunk_by`` ``"sentences"`` or
    ``"tokens"``, ``chunk_size`` tokens, ``chunk_overlap``) and every chunk gets a row (see chunks.py)."""
    _check_options(batch_size, shard_size, engine, num_workers, gpus_per_worker, threads_per_worker)
    # where the model will run: a Ray actor on its GPU or CPUs, the local engine where load_backbone puts it
    device = resolve_device(("cuda" if gpus_per_worker else "cpu") if engine == "ray" else None)
    check_inference_precision(resolve_dtype(dtype, device), quantization, device)
    precision = check_precision_option(precision, dimensions)
    chunk = chunk_settings(chunking, chunk_by, chunk_size, chunk_overlap, engine)
    if engine == "ray":
        from decoder2vec.corpus.ray_engine import import_ray

        import_ray()  # a missing extra fails before anything is read
    out = Path(out).expanduser()
    corpus = read_corpus(inputs, field, id_field)
    plan = plan_shards(len(corpus), shard_size)
    model = model_identity(model)
    settings = {
        "model": model,
        "instruction": instruction,
        "normalize": normalize,
        "dimensions": dimensions,
        "precision": precision,
        "field": field,
        "id_field": id_field,
        "shard_size": shard_size,
        # recorded only when set, like the chunk settings: a resumed run must embed with the same kernels
        **({"dtype": dtype} if dtype else {}),
        **({"quantization": quantization} if quantization else {}),
        **chunk,  # recorded only for a chunked run
    }
    manifest = new_manifest(corpus, len(plan), settings)
    old = read_manifest(out)
    if old is not None:
        check_same_run(out, old, manifest, INPUT_SETTINGS)
        for name in (MANIFEST, DATA_DIR, DONE_DIR):  # written, replaced and cleaned below: ours, in out
            check_inside(out / name, out)
    # The manifest shares `settings`, so what the model decides is recorded too.
    settings.update(describe_model(model, pooling, max_length, instruction))
    columns, dtype = output_shape(settings["dimension"], dimensions, precision)
    if chunk:  # every document split on the tokenizer alone: a bad one is named before any model loads
        check_chunked_corpus(model, corpus, settings)
    if old is not None:
        check_same_run(out, old, {"settings": settings}, MODEL_SETTINGS)
        manifest = old
        if manifest_layout_is_old(manifest):  # shards beside the manifest: move them into data/
            moved = adopt_old_layout(out, plan)
            manifest = {**manifest, "format": FORMAT, "settings": {**ADDED_DEFAULTS, **manifest["settings"]}}
            write_manifest(out, manifest)
            _note(
                f"moved {moved} shard(s) of {out} into {out / DATA_DIR} (the layout of this version)", "note"
            )
    else:
        write_manifest(out, manifest)  # before any shard: the folder is ours from now on
    remove_partial_files(out)
    pending, notes = pending_shards(out, plan)
    for note in notes:
        _note(note)
    if pending:
        if manifest.get("complete"):  # a shard was deleted or damaged: not complete until redone
            manifest = {**manifest, "complete": False}
            write_manifest(out, manifest)
        done_rows = len(corpus) - sum(len(plan[k]) for k in pending)
        progress = ShardProgress(len(corpus), done_rows, len(plan), len(plan) - len(pending), show_progress)
        options = EngineOptions(batch_size, ray_address, num_workers, gpus_per_worker, threads_per_worker)
        ranges = (manifest.get("calibration") or {}).get("ranges")
        if ranges is not None:  # recorded by an earlier run; the file may have been edited since
            ranges = check_ranges(ranges, where=f"{out / MANIFEST}: calibration.ranges")
        calibration = None
        if precision in CALIBRATED and ranges is None:

            def record(computed, source: str) -> None:
                nonlocal manifest
                entry = {"source": source, "ranges": np.asarray(computed, dtype=np.float32).tolist()}
                manifest = {**manifest, "calibration": entry}
                write_manifest(out, manifest)  # before the first quantized shard

            ranges = model_ranges(model, dimensions, normalize)
            if ranges is not None:
                record(ranges, "the encoder's calibration sample")
            else:
                rows = calibration_rows(len(corpus))
                source = f"{len(rows)} evenly spaced texts of the corpus"
                calibration = Calibration(rows, dimensions, normalize, lambda r: record(r, source))
        try:
            _run_engine(engine, corpus, plan, pending, out, settings, options, progress, ranges, calibration)
        finally:
            progress.close()
    if not manifest.get("complete"):
        write_manifest(out, {**manifest, "complete": True})
    return CorpusResult(
        out,
        len(corpus),
        dimensions or settings["dimension"],
        len(plan),
        len(plan) - len(pending),
        precision,
        columns,
        dtype,
        recorded_chunks(out, len(plan)) if chunk else None,
    )


def _note(message: str, kind: str = "warning") -> None:
    print(f"{kind}: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class EngineOptions:
    """How to run, as opposed to what to compute: free to change between a run and its resumption."""

    batch_size: int
    ray_address: str | None
    num_workers: int
    gpus_per_worker: float
    threads_per_worker: int


def _run_engine(
    engine: str,
    corpus: Corpus,
    plan: list[range],
    pending: list[int],
    out: Path,
    settings: dict[str, Any],
    options: EngineOptions,
    progress: ShardProgress,
    ranges=None,
    calibration: Calibration | None = None,
) -> None:
    # Load exactly as the manifest says; check_encoder catches any drift from describe_model.
    encoder_kwargs = {
        "pooling": settings["pooling"],
        "max_length": settings["max_length"],
        "dtype": settings.get("dtype"),
        "quantization": settings.get("quantization"),
    }
    expected = {key: settings[key] for key in MODEL_SETTINGS}
    common = {
        "instruction": settings["instruction"],
        "normalize": settings["normalize"],
        "batch_size": options.batch_size,
        "progress": progress,
        "compact": encode_options(settings, ranges),
        "calibration": calibration,
    }
    if engine == "local":
        from decoder2vec.backbone.model_io import quiet_transformers
        from decoder2vec.corpus.local import run_local
        from decoder2vec.encoding.encoder import Encoder

        quiet_transformers()
        encoder = Encoder.from_pretrained(settings["model"], **encoder_kwargs)
        check_encoder(encoder, expected)
        run_local(encoder, corpus, plan, pending, out, chunks=chunk_options(settings), **common)
    else:
        from decoder2vec.corpus.ray_engine import run_ray

        run_ray(
            corpus,
            plan,
            pending,
            out,
            model=settings["model"],
            encoder_kwargs=encoder_kwargs,
            expected=expected,
            ray_address=options.ray_address,
            num_workers=options.num_workers,
            gpus_per_worker=options.gpus_per_worker,
            threads_per_worker=options.threads_per_worker,
            **common,
        )


def _check_options(
    batch_size: int, shard_size: int, engine: str, num_workers: int, gpus_per_worker: float, threads: int
) -> None:
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    for name, value in (
        ("--batch-size", batch_size),
        ("--shard-size", shard_size),
        ("--num-workers", num_workers),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if threads < 1:
        raise ConfigError(f"--threads-per-worker must be at least 1, got {threads}")
    if gpus_per_worker < 0:
        raise ConfigError(f"--gpus-per-worker must not be negative, got {gpus_per_worker}")
