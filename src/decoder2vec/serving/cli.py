"""``decoder2vec serve``: run the OpenAI-compatible embedding server with uvicorn."""

import signal
from typing import Annotated

import typer

from decoder2vec.backbone.default_model import DEFAULT_ENCODER
from decoder2vec.backbone.model_io import quiet_transformers
from decoder2vec.cli_common import DtypeOption, ModelOption, QuantizationOption, reports_errors
from decoder2vec.errors import Decoder2VecError, ModelLoadError
from decoder2vec.serving.settings import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_PAYLOAD_BYTES,
    ServeSettings,
    exposure_warning,
)

# Seconds uvicorn waits for in-flight requests after SIGTERM before cancelling them.
DRAIN_SECONDS = 60


@reports_errors
def serve(
    model: ModelOption = DEFAULT_ENCODER,
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless told otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="DECODER2VEC_API_KEY", show_envvar=True, help="Require 'Authorization: Bearer KEY'."
        ),
    ] = None,
    max_batch_tokens: Annotated[
        int | None, typer.Option(help="Padded tokens per forward (default: 1024 on CPU, 16384 on GPU).")
    ] = None,
    max_client_batch_size: Annotated[int, typer.Option(help="Most inputs in one request (else 413).")] = 512,
    max_queue: Annotated[
        int, typer.Option(help="Most texts accepted and not yet answered (else 429).")
    ] = 8192,
    max_length: Annotated[
        int | None, typer.Option(help="Token limit per text (default: the model's setting).")
    ] = None,
    max_payload_bytes: Annotated[
        int, typer.Option(help="Largest request body (else 413).")
    ] = DEFAULT_PAYLOAD_BYTES,
    body_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds to receive a request's headers (else the connection is closed), and its body once "
            "the headers are in (else 408).",
        ),
    ] = DEFAULT_BODY_TIMEOUT,
    served_model_name: Annotated[
        str | None, typer.Option(help="The model id the API reports (default: --model).")
    ] = None,
    model_process: Annotated[
        bool,
        typer.Option(
            "--model-process/--no-model-process",
            help="Run the model in a child process, so forwards never wait for the HTTP side's GIL.",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    dtype: DtypeOption = None,
    quantization: QuantizationOption = None,
) -> None:
    """Serve embeddings over an OpenAI-compatible HTTP API (POST /v1/embeddings)."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise Decoder2VecError(
            f"decoder2vec serve needs the optional extra ({exc.name} is missing): pip install 'decoder2vec[serve]'"
        ) from None

    from decoder2vec.serving.app import create_app
    from decoder2vec.serving.connections import header_deadline_protocol

    settings = ServeSettings(
        model=model,
        api_key=api_key,
        max_batch_tokens=max_batch_tokens,
        max_client_batch_size=max_client_batch_size,
        max_queue=max_queue,
        max_length=max_length,
        max_payload_bytes=max_payload_bytes,
        body_timeout=body_timeout,
        served_model_name=served_model_name,
        model_process=model_process,
        dtype=dtype,
        quantization=quantization,
    )
    warning = exposure_warning(host, api_key)
    if warning is not None:
        typer.echo(f"warning: {warning}", err=True)
    quiet_transformers()
    failure: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop_on_load_error(exc: BaseException) -> None:
        failure.append(exc)
        server.should_exit = True

    app = create_app(settings, on_load_error=stop_on_load_error)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=DRAIN_SECONDS,
        lifespan="on",
        http=header_deadline_protocol(settings.body_timeout),  # slow headers are cut off like a slow body
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has drained, with the handler that was in
    # place before it started; a no-op one makes a graceful SIGTERM end with exit code 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failure:
        error = failure[0]
        # Not one of ours (e.g. a ValueError for --max-length): still one error line, no traceback.
        if not isinstance(error, Decoder2VecError):
            raise ModelLoadError(f"could not load {model}: {error}") from error
        raise error
