"""The ``decoder2vec`` command line. Errors are reported as one line, without a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from decoder2vec.backbone.default_model import DEFAULT_MODEL
from decoder2vec.cli_common import quiet_transformers, reports_errors

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn decoder-only LLMs into text encoders (LLM2Vec).")

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model folder, .gguf file, hub id, or the alias 'smollm2-135m'.")]


def _quiet_transformers() -> None:
    quiet_transformers()


def _load(model: str, pooling: str | None = None, causal: bool = False, max_length: int | None = None):
    from decoder2vec import Encoder

    _quiet_transformers()

    return Encoder.from_pretrained(model, pooling=pooling, bidirectional=False if causal else None, max_length=max_length)


def read_texts(source: str, field: str = "text") -> list[str]:
    """Texts from a file or ``-`` (stdin): one per line, or JSONL objects with a ``field`` key."""
    if source == "-":
        lines, name = sys.stdin.read().splitlines(), "<stdin>"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"input file not found: {path}")
        lines, name = path.read_text(encoding="utf-8").splitlines(), str(path)
    is_jsonl = name.endswith(".jsonl") or next((ln.lstrip().startswith("{") for ln in lines if ln.strip()), False)
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # blank lines separate nothing; skipping them keeps line files forgiving
        if not is_jsonl:
            texts.append(line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or field not in record:
            raise ValueError(f"{name}:{number}: no '{field}' field")
        if not isinstance(record[field], str):
            raise ValueError(f"{name}:{number}: field '{field}' is not a string")
        texts.append(record[field])
    if not texts:
        raise ValueError(f"{name} holds no texts")
    return texts


def write_embeddings(path: Path, embeddings, texts: list[str]) -> None:
    """``.npy`` (float32 matrix) or ``.jsonl`` (text + embedding per line), written atomically."""
    import io

    import numpy as np

    from decoder2vec.backbone.cache import write_file_atomic

    if path.suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, embeddings.astype(np.float32))
        write_file_atomic(path, buffer.getvalue())
    elif path.suffix == ".jsonl":
        lines = (json.dumps({"text": t, "embedding": [round(float(x), 7) for x in row]}) for t, row in zip(texts, embeddings))
        write_file_atomic(path, "".join(line + "\n" for line in lines))
    else:
        raise ValueError(f"output {path} must end in .npy or .jsonl")


@app.command()
@reports_errors
def encode(
    source: Annotated[str, typer.Argument(help="Text file (one per line), JSONL file, or - for stdin.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npy or .jsonl file.")],
    model: ModelOption = DEFAULT_MODEL,
    field: Annotated[str, typer.Option(help="Text field of JSONL records.")] = "text",
    instruction: Annotated[str | None, typer.Option(help="Instruction attended to but not pooled.")] = None,
    pooling: Annotated[str | None, typer.Option(help="mean, weighted_mean, last_token or bos.")] = None,
    causal: Annotated[bool, typer.Option("--causal", help="Keep the causal mask (baseline).")] = False,
    batch_size: int = 32,
    max_length: Annotated[int | None, typer.Option(help="Token limit per text (default: the model's setting).")] = None,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the embeddings.")] = False,
) -> None:
    """Embed texts from a file or stdin and write them as .npy or .jsonl."""
    texts = read_texts(source, field)
    if out.suffix not in (".npy", ".jsonl"):
        raise ValueError(f"output {out} must end in .npy or .jsonl")
    encoder = _load(model, pooling, causal, max_length)
    embeddings = encoder.encode(texts, instruction=instruction, batch_size=batch_size, normalize=normalize, show_progress_bar=True)
    write_embeddings(out, embeddings, texts)
    typer.echo(f"wrote {len(texts)} embeddings of dimension {embeddings.shape[1]} to {out}")


@app.command()
@reports_errors
def similarity(
    a: Annotated[str, typer.Argument(help="First text.")],
    b: Annotated[str, typer.Argument(help="Second text.")],
    model: ModelOption = DEFAULT_MODEL,
    pooling: Annotated[str | None, typer.Option(help="mean, weighted_mean, last_token or bos.")] = None,
    causal: Annotated[bool, typer.Option("--causal")] = False,
) -> None:
    """Print the cosine similarity of two texts."""
    encoder = _load(model, pooling, causal)
    embeddings = encoder.encode([a, b], normalize=True)
    typer.echo(f"{float(embeddings[0] @ embeddings[1]):.4f}")


@app.command("import-gguf")
@reports_errors
def import_gguf_command(
    gguf_file: Annotated[Path, typer.Argument(help="A GGUF decoder that transformers can read.")],
    out_dir: Annotated[Path, typer.Argument(help="New folder for the safetensors model.")],
    eos_token: Annotated[str | None, typer.Option(help="Override the eos token.")] = None,
    pad_token: Annotated[str | None, typer.Option(help="Override the pad token (default: eos).")] = None,
) -> None:
    """Dequantize a GGUF file into a safetensors model folder."""
    from decoder2vec.backbone.gguf_import import import_gguf

    folder = import_gguf(gguf_file, out_dir, eos_token=eos_token, pad_token=pad_token)
    typer.echo(f"wrote {folder}")


@app.command()
@reports_errors
def info(model: ModelOption = DEFAULT_MODEL, causal: Annotated[bool, typer.Option("--causal")] = False) -> None:
    """Describe a model: architecture, size, pooling, and the attention self-check result."""
    from decoder2vec.backbone.loading import check_attention

    encoder = _load(model, causal=causal)
    config = encoder.model.config
    n_params = sum(p.numel() for p in encoder.model.parameters())
    check = check_attention(encoder.model, encoder.tokenizer)
    rows = {
        "model": str(model),
        "architecture": f"{config.model_type} ({type(encoder.model).__name__})",
        "parameters": f"{n_params / 1e6:.1f}M",
        "layers x hidden": f"{config.num_hidden_layers} x {config.hidden_size}",
        "attention": f"{config._attn_implementation}, {check.describe()}",
        "pooling": encoder.pooling,
        "max_length": str(encoder.max_length),
        "dtype / device": f"{next(encoder.model.parameters()).dtype} / {encoder.device}",
    }
    width = max(map(len, rows))
    for key, value in rows.items():
        typer.echo(f"{key:<{width}}  {value}")


@app.command()
@reports_errors
def demo(
    model: ModelOption = DEFAULT_MODEL,
    train: Annotated[bool, typer.Option("--train/--no-train", help="Run the short conversion and score it.")] = True,
    out: Annotated[Path, typer.Option(help="Folder of the demo conversion (reused when finished).")] = Path("runs/demo"),
    mntp_steps: int = 20,
    simcse_steps: int = 20,
) -> None:
    """Causal vs bidirectional similarities, then a short real conversion with a before/after score."""
    from decoder2vec.demo import run_demo

    _quiet_transformers()
    run_demo(model, echo=typer.echo, train=train, out=out, mntp_steps=mntp_steps, simcse_steps=simcse_steps)


def _register_optional_commands() -> None:
    # Training and evaluation bring their own commands; they live in their stage packages.
    for module_name in ("decoder2vec.training.cli", "decoder2vec.evaluation.cli"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(app)
    # Newer sub-commands: a module exposes a command function or a Typer sub-app.
    for module_name, attr, name, kind in (
        ("decoder2vec.serving.cli", "serve", "serve", "command"),
        ("decoder2vec.corpus.cli", "embed_corpus", "embed-corpus", "command"),
        ("decoder2vec.export.cli", "app", "export", "group"),
    ):
        try:
            module = __import__(module_name, fromlist=[attr])
        except ModuleNotFoundError as exc:
            if exc.name not in (module_name, module_name.rsplit(".", 1)[0]):
                raise
            continue
        if kind == "command":
            app.command(name)(getattr(module, attr))
        else:
            app.add_typer(getattr(module, attr), name=name)


_register_optional_commands()

if __name__ == "__main__":
    app()
