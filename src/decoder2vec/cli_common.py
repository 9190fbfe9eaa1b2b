"""What every ``decoder2vec`` sub-command shares: error reporting and the model options.

Sub-command modules (``training/cli.py``, ``evaluation/cli.py``, ``serving/cli.py``, ...) import from
here, never from :mod:`decoder2vec.cli`, which only assembles them; so there are no import cycles. What
engine code needs too lives below the CLI, and no engine module imports a CLI module (the import contracts
in pyproject.toml): ``quiet_transformers`` in :mod:`decoder2vec.backbone.model_io`,
``check_precision_options`` in :mod:`decoder2vec.backbone.precision`, ``load_encoder`` in
:mod:`decoder2vec.encoding.encoder`.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Annotated

import typer

from decoder2vec.errors import Decoder2VecError

ModelOption = Annotated[
    str,
    typer.Option("--model", "-m", help="Model folder, .gguf file, hub id, or an alias (smollm2-135m, ...)."),
]
DtypeOption = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        help="Weights and activations: float32 (CPU default) or bfloat16 (needs AVX512-BF16/AMX on CPU).",
    ),
]
QuantizationOption = Annotated[
    str | None,
    typer.Option(
        "--quantization", help="int8: int8 linear layers on CPU (VNNI/AMX), ~99% of float32 quality."
    ),
]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line per warning, without the Python source line that the default format prints.
    typer.echo(f"warning: {message}", err=True)


def reports_errors(command):
    """Turn user mistakes (``Decoder2VecError``) and I/O failures (``OSError``) into one
    ``error: ...`` line and exit code 1. Anything else is a bug and keeps its traceback;
    ``DECODER2VEC_DEBUG=1`` shows the traceback for every error."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _show_warning
        try:
            return command(*args, **kwargs)
        except (Decoder2VecError, OSError) as exc:
            if os.environ.get("DECODER2VEC_DEBUG"):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from None

    return wrapper
