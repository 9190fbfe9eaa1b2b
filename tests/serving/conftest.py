"""A real uvicorn server on a free loopback port, run in a thread of the test process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import torch
import uvicorn

from decoder2vec import Encoder
from decoder2vec.serving import ServeSettings, create_app
from decoder2vec.serving.connections import header_deadline_protocol

# Two cores are shared by several test runs: one thread each keeps timings predictable.
torch.set_num_threads(1)
API_KEY = "test-key"


@contextlib.contextmanager
def running_server(app, startup_timeout: float = 30.0, http: type | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port; yields its base URL, then shuts it down (drains)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # the HTTP protocol `decoder2vec serve` runs: headers due within the app's body timeout
    http = http or header_deadline_protocol(app.state.runtime.settings.body_timeout)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", http=http))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_ready(client, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/health").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("the server never became ready")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def encoder(tiny_llama) -> Encoder:
    return Encoder.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def server(encoder) -> Iterator[str]:
    """One ready server, with an API key and small limits, shared by a test module."""
    settings = ServeSettings(
        model="tiny-llama",
        api_key=API_KEY,
        max_client_batch_size=16,
        max_queue=4096,
        max_payload_bytes=20_000,
        max_batch_tokens=256,
    )
    import httpx

    with running_server(create_app(settings, loader=lambda s: encoder)) as url:
        with httpx.Client(base_url=url) as client:
            wait_ready(client)
        yield url
