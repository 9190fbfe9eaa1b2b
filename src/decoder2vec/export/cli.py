"""``decoder2vec export gguf``: write an encoder as a GGUF file for llama.cpp, Ollama and LM Studio."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from decoder2vec.backbone.default_model import DEFAULT_ENCODER
from decoder2vec.backbone.model_io import quiet_transformers
from decoder2vec.cli_common import ModelOption, reports_errors

app = typer.Typer(
    help="Write encoders in formats other tools run (GGUF for llama.cpp, ONNX, static embeddings for model2vec).",
    no_args_is_help=True,
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


def refuse_static(model: str, why: str) -> None:
    """A static model (a folder of token vectors, or the static alias) cannot be what a command needs."""
    from decoder2vec.backbone.default_model import STATIC_ENCODER
    from decoder2vec.errors import ModelLoadError
    from decoder2vec.static_format import is_static_folder

    path = Path(model).expanduser()
    if model == STATIC_ENCODER or (path.is_dir() and is_static_folder(path)):
        raise ModelLoadError(f"{model} is a static model (a mean of token vectors): {why}")


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
    refuse_static(
        model, "GGUF export needs a transformer encoder; model2vec and sentence-transformers run it"
    )
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


@app.command("static")
@reports_errors
def static_command(
    encoder_name: Annotated[
        str, typer.Argument(metavar="ENCODER", help="Encoder folder, .gguf file or alias.")
    ],
    out: Annotated[Path, typer.Argument(metavar="OUT", help="New folder for the static model.")],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="distill: the encoder's vector of every token, PCA + SIF (model2vec); context: each token's "
            "states averaged over a Wikipedia corpus (mean pooling); tokenlearn: then train the table on the "
            "encoder's embeddings of that corpus.",
        ),
    ] = "tokenlearn",
    dims: Annotated[int, typer.Option("--dims", help="Width of the static vectors (PCA).")] = 256,
    sif: Annotated[
        float, typer.Option("--sif", help="SIF coefficient of the Zipf token weights (0: no weighting).")
    ] = 1e-5,
    instruction: Annotated[
        str | None,
        typer.Option("--instruction", help="Bake this instruction in (the static model follows no other)."),
    ] = None,
    corpus_texts: Annotated[
        int,
        typer.Option("--corpus-texts", help="context, tokenlearn: Wikipedia sentences and leads to embed."),
    ] = 2500,
    epochs: Annotated[int, typer.Option("--epochs", help="tokenlearn: passes over the corpus.")] = 30,
    overwrite: OverwriteOption = False,
) -> None:
    """Distil ENCODER into a static token-embedding model at OUT (model2vec's format: model2vec's StaticModel,
    sentence-transformers' StaticEmbedding and decoder2vec's Encoder load it). Each token is embedded through
    the encoder's own instruction, attention and pooling; an interrupted run resumes where it stopped."""
    from decoder2vec import Encoder
    from decoder2vec.export.static import (
        StaticSettings,
        check_static_out,
        check_static_settings,
        export_static,
    )

    settings = StaticSettings(
        dims=dims,
        method=method,
        sif=sif or None,
        instruction=instruction,
        corpus_texts=corpus_texts,
        epochs=epochs,
    )
    check_static_settings(settings)  # bad flags and an OUT we may not write fail before the model loads
    check_static_out(out, overwrite=overwrite, model=encoder_name)
    refuse_static(encoder_name, "it is already static; pass the transformer encoder to distil")
    quiet_transformers()
    encoder = Encoder.from_pretrained(encoder_name, dtype="float32", device="cpu")
    path = export_static(encoder, out, settings, model_name=encoder_name, overwrite=overwrite)
    typer.echo(f"wrote {path} ({method}, {dims} dimensions)")
