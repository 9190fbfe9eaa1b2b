"""``decoder2vec import-gguf``: a GGUF decoder as a safetensors model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from decoder2vec.cli_common import reports_errors


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
