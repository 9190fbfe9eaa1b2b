"""The FastAPI app: ``/v1/embeddings``, ``/v1/models``, ``/health`` and ``/metrics``.

The model loads in the lifespan, in a thread (into a child process with ``--model-process``, see
:mod:`decoder2vec.serving.worker`), so the server answers (``/health`` 503) while it loads; it is ready
once the attention self-check has passed and the batcher runs.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from decoder2vec.encoding.compact import finish
from decoder2vec.encoding.encoder import Encoder
from decoder2vec.encoding.static import StaticEncoder
from decoder2vec.errors import Decoder2VecError, InputError
from decoder2vec.serving.batcher import DynamicBatcher, QueueFullError, ShuttingDownError
from decoder2vec.serving.inputs import build_sequences, output_specs
from decoder2vec.serving.metrics import ServerMetrics
from decoder2vec.serving.protocol import APIError, parse_request, render_embeddings, validation_error
from decoder2vec.serving.settings import ServeSettings
from decoder2vec.serving.worker import (
    InProcessModel,
    ModelInfo,
    ModelProcess,
    ServedModel,
    load_checked_encoder,
)

logger = logging.getLogger("decoder2vec.serving")
Loader = Callable[[ServeSettings], "ServedModel | Encoder"]


def default_loader(settings: ServeSettings) -> ServedModel:
    """The model in a child process (``settings.model_process``) or in this one."""
    if settings.model_process:
        return ModelProcess(settings)
    return InProcessModel(load_checked_encoder(settings), settings)


class Runtime:
    """The loaded model and the batcher, or why they are not there yet."""

    def __init__(self, settings: ServeSettings, loader: Loader, on_load_error: Callable | None) -> None:
        self.settings = settings
        self.metrics = ServerMetrics()
        self.loader = loader
        self.on_load_error = on_load_error
        self.model: ServedModel | None = None
        self.batcher: DynamicBatcher | None = None
        self.error: BaseException | None = None
        # The fast tokenizer is not safe to call from several threads at once: one thread for it.
        self.tokenize_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decoder2vec-tokenize")

    @property
    def ready(self) -> bool:
        return self.batcher is not None and self.model is not None and self.model.alive

    async def load(self) -> None:
        try:
            model = await asyncio.to_thread(self.loader, self.settings)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported by /health and the CLI
            self.error = exc
            logger.error("could not load %s: %s", self.settings.model, exc)
            if self.on_load_error is not None:
                self.on_load_error(exc)
            return
        if isinstance(model, Encoder | StaticEncoder):
            model = InProcessModel(model, self.settings)
        batcher = DynamicBatcher(
            model.embed,
            max_batch_tokens=model.info.max_batch_tokens,
            forward_overhead_tokens=model.info.forward_overhead_tokens,
            max_queue=self.settings.max_queue,
            metrics=self.metrics,
        )
        batcher.start()
        self.model, self.batcher = model, batcher
        logger.info(
            "%s is ready (%s, %d padded tokens per forward)",
            self.settings.model_name,
            model.info.description,
            model.info.max_batch_tokens,
        )

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        if self.model is not None:
            await asyncio.to_thread(self.model.close)
        self.tokenize_executor.shutdown(wait=True)

    def require_ready(self) -> tuple[ModelInfo, DynamicBatcher]:
        if self.batcher is None or self.model is None:
            state = f"failed to load: {self.error}" if self.error else "is loading"
            raise APIError(503, f"the model {state}", type="service_unavailable", code="model_not_ready")
        if not self.model.alive:
            raise APIError(
                503, "the model process has stopped", type="service_unavailable", code="model_gone"
            )
        return self.model.info, self.batcher


def create_app(
    settings: ServeSettings, *, loader: Loader = default_loader, on_load_error: Callable | None = None
) -> FastAPI:
    """An app serving ``settings.model``; ``loader`` builds the served model, or an ``Encoder`` that is
    then run in a thread of this process (tests pass their own)."""
    runtime = Runtime(settings, loader, on_load_error)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(runtime.load())
        try:
            yield
        finally:
            # uvicorn has already let in-flight requests finish; this drains what is left.
            if not loading.done():
                loading.cancel()
            await runtime.close()

    # No browsable docs; the schema is served below, behind the API key like the API it describes.
    app = FastAPI(title="decoder2vec", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics)
    _add_error_handlers(app)

    @app.get("/health")
    async def health() -> JSONResponse:
        if runtime.ready:
            return JSONResponse({"status": "ok"})
        if runtime.error is not None:
            return JSONResponse({"status": "failed", "error": str(runtime.error)}, status_code=503)
        if runtime.model is not None:  # loaded once, but its process has stopped
            return JSONResponse(
                {"status": "failed", "error": "the model process has stopped"}, status_code=503
            )
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        check_key(request, settings.api_key)
        return JSONResponse(app.openapi())

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        check_key(request, settings.api_key)
        card = {"id": settings.model_name, "object": "model", "created": created, "owned_by": "decoder2vec"}
        if runtime.model is not None:  # what `dimensions` can ask for (vLLM's field names)
            info = runtime.model.info
            card["dimensions"] = info.embedding_dim
            card["matryoshka_dimensions"] = info.matryoshka_dimensions
            card["embedding_types"] = ["float", "binary", "ubinary"] + (
                ["int8", "uint8"] if info.calibration is not None else []
            )
        return JSONResponse({"object": "list", "data": [card]})

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        check_key(request, settings.api_key)
        info, batcher = runtime.require_ready()
        body = parse_request(await read_body(request, settings.max_payload_bytes))
        inputs = body.inputs()
        if len(inputs) > settings.max_client_batch_size:
            raise APIError(
                413,
                f"{len(inputs)} inputs exceed the maximum of {settings.max_client_batch_size} per request",
                param="input",
                code="too_many_inputs",
            )
        specs = output_specs(info.embedding_dim, body.dimensions, body.embedding_types, info.calibration)
        sequences = await asyncio.get_running_loop().run_in_executor(
            runtime.tokenize_executor,
            lambda: build_sequences(
                info.builder, inputs, body.instruction, truncate=body.truncate, vocab_size=info.vocab_size
            ),
        )
        try:
            future = batcher.submit(sequences)
        except QueueFullError as exc:
            raise APIError(429, f"the server is busy ({exc}); retry later", type="rate_limit_error") from None
        except ShuttingDownError as exc:
            raise APIError(503, str(exc), type="service_unavailable") from None
        try:
            rows = await result_unless_disconnected(future, request)
        except RuntimeError as exc:  # the batcher's report of a failed forward
            raise APIError(500, str(exc), type="server_error") from None
        if rows is None:
            return Response(status_code=499)  # nobody reads it; the code only shows in logs and metrics
        tokens = sum(len(s.ids) for s in sequences)
        pooled = rows.numpy()
        outputs = {kind: finish(pooled, spec) for kind, spec in specs.items()}
        if body.embedding_types is None:
            outputs = outputs["float"]  # the OpenAI shape
        # Rendering thousands of floats as JSON takes a while; keep it off the event loop.
        content = await asyncio.to_thread(
            render_embeddings, outputs, body.encoding_format, settings.model_name, tokens
        )
        return Response(content, media_type="application/json")

    return app


def check_key(request: Request, api_key: str | None) -> None:
    """``Authorization: Bearer <key>``, compared in constant time."""
    if api_key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), api_key.encode()):
        raise APIError(
            401, "missing or incorrect API key", type="authentication_error", code="invalid_api_key"
        )


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (declared length first, then as it streams), and
    with 408 unless all of it arrives within ``timeout`` seconds (default: the app's ``body_timeout``),
    so a client that stalls mid-body cannot hold its connection forever."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    if timeout is None:
        timeout = request.app.state.runtime.settings.body_timeout
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise APIError(
            408,
            f"the request body did not arrive within {timeout:g} s ({size} bytes received)",
            code="body_timeout",
        ) from None
    return b"".join(chunks)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body exceeds {limit} bytes", code="payload_too_large")


async def result_unless_disconnected(future: asyncio.Future, request: Request) -> torch.Tensor | None:
    """Wait for the rows; if the client goes away first, cancel them (their forwards are skipped)."""
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        future.cancel()
        raise
    finally:
        watcher.cancel()
    if future.done():
        return future.result()
    future.cancel()
    return None


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect (uvicorn sends it when the
    # socket closes, or once the response is complete).
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    # The one place the library's own errors become HTTP: bad input is the client's (422), anything
    # else decoder2vec raises on purpose is the server's (a model that cannot serve: 500).
    @app.exception_handler(Decoder2VecError)
    async def library_error(request: Request, exc: Decoder2VecError) -> JSONResponse:
        if isinstance(exc, InputError):
            error = APIError(422, str(exc), param=exc.param, code=exc.code)
        else:
            error = APIError(500, str(exc), type="server_error")
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = validation_error(exc.errors())
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        error = APIError(exc.status_code, str(exc.detail), type=kind)
        return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        error = APIError(500, f"internal error: {exc}", type="server_error")
        return JSONResponse(error.body(), status_code=500)


class MetricsMiddleware:
    """Counts every HTTP request by endpoint and status, with its latency (pure ASGI: the request's
    ``receive`` is passed through untouched, so disconnects still reach the endpoint)."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.observe_request(scope["path"], status, time.perf_counter() - start)
