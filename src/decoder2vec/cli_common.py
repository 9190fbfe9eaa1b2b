"""What every ``decoder2vec`` sub-command shares: error reporting, the model option, model loading.

Sub-command modules (``training/cli.py``, ``evaluation/cli.py``, ``serving/cli.py``, ...) import from
here, never from :mod:`decoder2vec.cli`, which only assembles them; so there are no import cycles.
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


def check_precision_options(dtype: str | None, quantization: str | None, device: str | None = None) -> None:
    """--dtype / --quantization checked against this machine before anything is read or loaded."""
    from decoder2vec.backbone.loading import resolve_device, resolve_dtype
    from decoder2vec.backbone.precision import check_inference_precision

    torch_device = resolve_device(device)
    check_inference_precision(resolve_dtype(dtype, torch_device), quantization, torch_device)


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


def quiet_transformers() -> None:
    """Our own progress bars and messages are enough; transformers' per-load bars and reports are noise,
    and so are deprecation notices about the libraries' code rather than the user's command."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # peft reads a property transformers 5 deprecated (`is_gradient_checkpointing`) on every LoRA model
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    for module in ("transformers", "peft", "accelerate"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)


def load_encoder(
    model: str,
    pooling: str | None = None,
    causal: bool = False,
    max_length: int | None = None,
    dtype: str | None = None,
    quantization: str | None = None,
):
    """Load an :class:`~decoder2vec.Encoder` for a command (quietly)."""
    from decoder2vec import Encoder

    quiet_transformers()
    return Encoder.from_pretrained(
        model,
        pooling=pooling,
        bidirectional=False if causal else None,
        max_length=max_length,
        dtype=dtype,
        quantization=quantization,
    )
