"""``decoder2vec export gguf``: write an encoder as a GGUF file for llama.cpp, Ollama and LM Studio."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from decoder2vec.backbone.default_model import DEFAULT_ENCODER
from decoder2vec.cli_common import ModelOption, quiet_transformers, reports_errors

app = typer.Typer(
    help="Write encoders in formats other tools run (GGUF for llama.cpp, ONNX).", no_args_is_help=True
)

OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output file, ending in .gguf.")]
OuttypeOption = Annotated[
    str, typer.Option("--outtype", help="Weight type: f32, f16 or q8_0 (norms and biases stay f32).")
]
AdapterOption = Annotated[
    list[str] | None, typer.Option("--adapter", help="LoRA adapter folder to merge first (repeatable).")
]
PoolingOption = Annotated[
    str | None,
    typer.Option(
        "--pooling", help="Override the encoder's pooling: mean, last_token or bos (llama.cpp CLS)."
    ),
]
CausalOption = Annotated[
    bool, typer.Option("--causal", help="Export with causal attention (default: the encoder's own mode).")
]
NameOption = Annotated[
    str | None, typer.Option("--name", help="general.name in the file (default: the model's).")
]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing --out file (never the model's own file).")
]


@app.command("gguf")
@reports_errors
def gguf_command(
    out: OutOption,
    model: ModelOption = DEFAULT_ENCODER,
    outtype: OuttypeOption = "f16",
    adapter: AdapterOption = None,
    pooling: PoolingOption = None,
    causal: CausalOption = False,
    name: NameOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Export an encoder as a llama.cpp embedding model: bidirectional attention and pooling travel in
    its metadata, so `llama-server --embeddings -m FILE.gguf` serves it with no extra flags."""
    from decoder2vec import Encoder
    from decoder2vec.export.gguf import check_before_loading, check_out_path, check_settings, export_gguf
    from decoder2vec.io import check_new_file

    check_settings(outtype, pooling)  # a bad flag fails before minutes of model loading
    check_new_file(check_out_path(out), overwrite=overwrite, inputs=[model])  # -m x.gguf -o x.gguf
    quiet_transformers()
    check_before_loading(model, outtype, pooling)  # so do the architecture and the saved pooling
    # fp32 on CPU: the exported weights are rounded once, to --outtype, never first to bf16.
    encoder = Encoder.from_pretrained(
        model,
        adapters=adapter or None,
        pooling=pooling,
        bidirectional=False if causal else None,
        dtype="float32",
        device="cpu",
    )
    result = export_gguf(encoder, out, outtype=outtype, name=name)
    mode = "causal" if result.causal else "bidirectional"
    size_mb = result.n_bytes / 2**20
    typer.echo(
        f"wrote {result.path} ({result.arch}, {result.outtype}, {mode}, pooling {result.pooling}, "
        f"{result.n_tensors} tensors, {size_mb:.1f} MiB)"
    )


@app.command("onnx")
@reports_errors
def onnx_command(
    encoder: Annotated[str, typer.Argument(help="Saved encoder folder or alias (smollm2-135m-llm2vec).")],
    out: Annotated[Path, typer.Argument(help="New folder to write (the encoder plus onnx/).")],
    quantize: Annotated[
        bool,
        typer.Option(
            "--quantize", help="Also write onnx/model_qint8_avx512_vnni.onnx (int8 weights per channel)."
        ),
    ] = False,
) -> None:
    """Export an encoder for sentence-transformers' ONNX backend (and TEI / Transformers.js): the saved
    encoder plus onnx/model.onnx, proven bidirectional and equal to PyTorch before it is published."""
    from decoder2vec import Encoder
    from decoder2vec.export.onnx import check_export, export_onnx

    out = out.expanduser()
    check_export(encoder, out)  # OUT, the folder, its pooling and projection: before any weight loads
    quiet_transformers()
    loaded = Encoder.from_pretrained(encoder, dtype="float32", device="cpu")
    result = export_onnx(loaded, out, quantize=quantize)
    typer.echo(
        f"wrote {result.path} ({', '.join(result.files)}; {result.attention.describe()}; "
        f"min cosine to PyTorch {result.min_cosine:.6f})"
    )
