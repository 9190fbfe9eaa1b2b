"""``decoder2vec encode``, ``similarity`` and ``info``: embed texts from files, stdin or the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from decoder2vec.backbone.default_model import DEFAULT_ENCODER, DEFAULT_MODEL
from decoder2vec.backbone.precision import check_precision_options
from decoder2vec.cli_common import DtypeOption, ModelOption, QuantizationOption, reports_errors
from decoder2vec.encoding.encoder import load_encoder
from decoder2vec.errors import ConfigError

TEXT_FORMATS = ("auto", "text", "jsonl")


def read_texts(source: str, field: str = "text", fmt: str = "auto") -> list[str]:
    """Texts from a file or ``-`` (stdin): one per line (``text``), or JSONL objects with a ``field`` key.

    ``auto`` reads ``.jsonl`` files as JSONL and other files as plain text; stdin is JSONL when its
    first non-blank line is a JSON object.
    """
    from decoder2vec.errors import InputError
    from decoder2vec.io import check_unicode, decode_lines, iter_jsonl, read_text_lines

    if fmt not in TEXT_FORMATS:
        raise InputError(f"--format must be one of {', '.join(TEXT_FORMATS)}, got {fmt!r}")
    if source == "-":
        name = "<stdin>"
        lines = decode_lines(sys.stdin.buffer.read(), name, fix="send UTF-8 text")
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"input file not found: {path}")
        lines, name = read_text_lines(path), str(path)
    if fmt == "auto":
        # Files: by extension. Stdin has none: JSONL when its first non-blank line is a JSON object.
        is_jsonl = name.endswith(".jsonl") or (name == "<stdin>" and _looks_like_json_object(lines))
    else:
        is_jsonl = fmt == "jsonl"
    texts = []
    if not is_jsonl:
        for number, line in enumerate(lines, start=1):
            if line.strip():  # blank lines separate nothing; skipping them keeps line files forgiving
                texts.append(check_unicode(line, f"{name}:{number}"))
    else:
        for number, record in iter_jsonl(name, lines):
            if not isinstance(record, dict) or field not in record:
                raise InputError(f"{name}:{number}: no '{field}' field")
            if not isinstance(record[field], str):
                raise InputError(f"{name}:{number}: field '{field}' is not a string")
            texts.append(check_unicode(record[field], f"{name}:{number}"))
    if not texts:
        raise InputError(f"{name} holds no texts")
    return texts


def _looks_like_json_object(lines: list[str]) -> bool:
    first = next((line for line in lines if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def check_output(path: Path, *, overwrite: bool = False, source: str | None = None) -> None:
    """Fail before any work when the output cannot be written, already exists (unless ``overwrite``) or
    is the input file ``source`` (always)."""
    from decoder2vec.errors import InputError
    from decoder2vec.io import check_new_file

    if path.suffix not in (".npy", ".jsonl"):
        raise InputError(f"output {path} must end in .npy or .jsonl")
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file name ending in .npy or .jsonl")
    if not path.parent.exists():
        raise InputError(f"the folder of output {path} does not exist")
    check_new_file(path, overwrite=overwrite, inputs=[source] if source not in (None, "-") else [])


def check_encode_options(pooling: str | None, batch_size: int, max_length: int | None) -> None:
    """Settings that need no model, checked before one is loaded."""
    from decoder2vec.encoding.pooling import POOLING_MODES

    if pooling is not None and pooling not in POOLING_MODES:
        raise ConfigError(f"--pooling {pooling!r} is not one of {', '.join(POOLING_MODES)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {batch_size}")
    if max_length is not None and max_length < 2:
        raise ConfigError(f"--max-length must be at least 2, got {max_length}")


def check_output_options(dimensions: int | None, precision: str) -> None:
    """--dimensions and --precision, before any model loads (the width is checked once it has)."""
    from decoder2vec.encoder_config import PRECISIONS

    if dimensions is not None and dimensions < 1:
        raise ConfigError(f"--dimensions must be a positive integer, got {dimensions}")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")


def write_embeddings(path: Path, embeddings, texts: list[str]) -> None:
    """``.npy`` (float32 matrix) or ``.jsonl`` (text + embedding per line), written atomically."""
    import io

    import numpy as np

    from decoder2vec.errors import InputError
    from decoder2vec.io import write_file_atomic

    if path.suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, embeddings, allow_pickle=False)  # float32, or int8/uint8 for compact precisions
        write_file_atomic(path, buffer.getvalue())
    elif path.suffix == ".jsonl":
        as_list = (
            (lambda row: [round(float(x), 7) for x in row])
            if embeddings.dtype == np.float32
            else (lambda row: [int(x) for x in row])
        )
        lines = (json.dumps({"text": t, "embedding": as_list(row)}) for t, row in zip(texts, embeddings))
        write_file_atomic(path, "".join(line + "\n" for line in lines))
    else:
        raise InputError(f"output {path} must end in .npy or .jsonl")


@reports_errors
def encode(
    source: Annotated[str, typer.Argument(help="Text file (one per line), JSONL file, or - for stdin.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npy or .jsonl file.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out file (never the input).")
    ] = False,
    model: ModelOption = DEFAULT_ENCODER,
    field: Annotated[str, typer.Option(help="Text field of JSONL records.")] = "text",
    instruction: Annotated[str | None, typer.Option(help="Instruction attended to but not pooled.")] = None,
    pooling: Annotated[str | None, typer.Option(help="mean, weighted_mean, last_token or bos.")] = None,
    causal: Annotated[bool, typer.Option("--causal", help="Keep the causal mask (baseline).")] = False,
    batch_size: int = 32,
    max_length: Annotated[
        int | None, typer.Option(help="Token limit per text (default: the model's setting).")
    ] = None,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the embeddings.")] = False,
    dimensions: Annotated[
        int | None,
        typer.Option(help="Keep the first N dimensions (a Matryoshka prefix; then --normalize applies)."),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="float32, int8, uint8 (need the encoder's calibration), binary or ubinary (packed bits)."
        ),
    ] = "float32",
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="Input format: text (one per line), jsonl, or auto (.jsonl files are JSONL)."
        ),
    ] = "auto",
    dtype: DtypeOption = None,
    quantization: QuantizationOption = None,
) -> None:
    """Embed texts from a file or stdin and write them as .npy or .jsonl."""
    check_output(out, overwrite=overwrite, source=source)
    check_precision_options(dtype, quantization)
    check_encode_options(pooling, batch_size, max_length)
    check_output_options(dimensions, precision)
    texts = read_texts(source, field, fmt)
    encoder = load_encoder(model, pooling, causal, max_length, dtype, quantization)
    try:
        output = encoder.output_spec(dimensions=dimensions, normalize=normalize, precision=precision)
    except (TypeError, ValueError) as exc:  # wider than the model, or int8 without calibration
        raise ConfigError(f"--dimensions/--precision: {exc}") from None
    embeddings = encoder.encode(
        texts,
        instruction=instruction,
        batch_size=batch_size,
        normalize=output.normalize,
        dimensions=output.dimensions,
        precision=output.precision,
        ranges=output.ranges,
        show_progress_bar=True,
    )
    write_embeddings(out, embeddings, texts)
    typer.echo(f"wrote {len(texts)} embeddings of dimension {embeddings.shape[1]} to {out}")


@reports_errors
def similarity(
    a: Annotated[str, typer.Argument(help="First text.")],
    b: Annotated[str, typer.Argument(help="Second text.")],
    model: ModelOption = DEFAULT_ENCODER,
    pooling: Annotated[str | None, typer.Option(help="mean, weighted_mean, last_token or bos.")] = None,
    causal: Annotated[bool, typer.Option("--causal")] = False,
) -> None:
    """Print the cosine similarity of two texts."""
    check_encode_options(pooling, 1, None)
    encoder = load_encoder(model, pooling, causal)
    embeddings = encoder.encode([a, b], normalize=True)
    typer.echo(f"{float(embeddings[0] @ embeddings[1]):.4f}")


@reports_errors
def info(
    model: ModelOption = DEFAULT_MODEL,
    causal: Annotated[bool, typer.Option("--causal")] = False,
    dtype: DtypeOption = None,
    quantization: QuantizationOption = None,
) -> None:
    """Describe a model: architecture, size, pooling, the attention self-check result and the kernels."""
    from decoder2vec.backbone.loading import check_attention

    check_precision_options(dtype, quantization)
    encoder = load_encoder(model, causal=causal, dtype=dtype, quantization=quantization)
    config = encoder.model.config
    from decoder2vec.backbone.precision import Int8Linear

    # int8 layers hold their weights packed, outside parameters()
    n_params = sum(p.numel() for p in encoder.model.parameters()) + sum(
        m.in_features * m.out_features for m in encoder.model.modules() if isinstance(m, Int8Linear)
    )
    check = check_attention(encoder.model, encoder.tokenizer)
    rows = {
        "model": str(model),
        "architecture": f"{config.model_type} ({type(encoder.model).__name__})",
        "parameters": f"{n_params / 1e6:.1f}M",
        "layers x hidden": f"{config.num_hidden_layers} x {config.hidden_size}",
        "attention": f"{config._attn_implementation}, {check.describe()}",
        "pooling": encoder.pooling,
        "embedding width": str(encoder.embedding_dim),
        "projection": "none"
        if encoder.projection is None
        else "{1} -> {0} after pooling (2_Dense/)".format(*encoder.projection.shape),
        "matryoshka dims": ", ".join(map(str, encoder.matryoshka_dimensions or [])) or "none declared",
        "int8 calibration": f"{len(encoder.calibration)} texts"
        if encoder.calibration is not None
        else "none",
        "max_length": str(encoder.max_length),
        "dtype / device": f"{encoder.dtype} / {encoder.device}",
        "kernels": encoder.kernels,
    }
    width = max(map(len, rows))
    for key, value in rows.items():
        typer.echo(f"{key:<{width}}  {value}")
