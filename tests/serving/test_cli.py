"""``decoder2vec serve`` as a command: settings errors, load errors, and a graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from decoder2vec.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_bad_settings_are_one_error_line():
    result = runner.invoke(app, ["serve", "--max-queue", "2", "--max-client-batch-size", "4"])
    assert result.exit_code == 1
    assert "error: max_queue (2) must be at least max_client_batch_size (4)" in result.output


def test_a_model_that_cannot_load_stops_the_server(tmp_path):
    # In a model process, so the load error also has to travel back from the child.
    args = ["serve", "--model", str(tmp_path), "--port", "0", "--log-level", "critical", "--model-process"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "error:" in result.output and "config.json" in result.output


def test_a_max_length_over_the_context_is_one_error_line(tiny_llama):
    args = [
        "serve",
        "--model",
        str(tiny_llama),
        "--port",
        "0",
        "--log-level",
        "critical",
        "--max-length",
        "100000",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "error: could not load" in result.output and "max_length=100000" in result.output
    assert "Traceback" not in result.output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_drains_in_flight_requests_then_exits_0(tiny_llama, encoder, tmp_path):
    port = free_port()
    env = dict(os.environ, DECODER2VEC_API_KEY="k", OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "tests.serving.slow_serve",
        "serve",
        "--model",
        str(tiny_llama),
        "--port",
        str(port),
    ]
    log = tmp_path / "server.log"  # a file, not a pipe: a full pipe would block the server's logging
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.1)
        responses: list[httpx.Response] = []
        body = {"input": ["the cat sat", "hello there"]}
        headers = {"Authorization": "Bearer k"}
        request = threading.Thread(
            target=lambda: responses.append(
                httpx.post(f"{url}/v1/embeddings", json=body, headers=headers, timeout=30)
            )
        )
        request.start()
        # Wait until the request is in the batcher (its forward takes a second), then ask to stop.
        while "decoder2vec_queue_depth 2.0" not in httpx.get(f"{url}/metrics").text:
            time.sleep(0.02)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        request.join(30)
        assert responses and responses[0].status_code == 200
        rows = np.array([d["embedding"] for d in responses[0].json()["data"]])
        np.testing.assert_allclose(rows, encoder.encode(body["input"]), atol=1e-5)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert time.monotonic() - sent < 30
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_missing_extra_is_one_clear_line_and_the_cli_still_imports(monkeypatch):
    from typer.testing import CliRunner

    from decoder2vec.cli import app

    for name in ("fastapi", "uvicorn", "prometheus_client"):
        monkeypatch.setitem(sys.modules, name, None)  # as if `pip install decoder2vec` without [serve]
    result = CliRunner().invoke(app, ["serve", "--model", "anything"])
    assert result.exit_code == 1
    assert "pip install 'decoder2vec[serve]'" in result.output and "Traceback" not in result.output


def test_serving_beyond_loopback_without_a_key_warns(monkeypatch):
    """Nothing is bound here (uvicorn's run is replaced): only what the command says before serving."""
    import uvicorn

    from decoder2vec.serving.settings import exposure_warning

    monkeypatch.delenv("DECODER2VEC_API_KEY", raising=False)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    result = runner.invoke(app, ["serve", "--model", "m", "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert "warning: serving on 0.0.0.0 without an API key" in result.stderr and "--api-key" in result.stderr
    for args in (["--host", "0.0.0.0", "--api-key", "k"], ["--host", "127.0.0.1"], []):
        result = runner.invoke(app, ["serve", "--model", "m", *args])
        assert result.exit_code == 0 and "warning" not in result.output, args
    for host in ("::", "192.168.1.5", "my-host.example", "[::]"):
        assert exposure_warning(host, None) is not None, host
    for host in ("localhost", "127.0.0.2", "::1", "[::1]"):
        assert exposure_warning(host, None) is None, host


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_body_timeout_must_be_positive_and_finite(value):
    """An infinite timeout is no timeout: a stalled client would hold its connection forever."""
    result = runner.invoke(app, ["serve", "--body-timeout", value])
    assert result.exit_code == 1, result.output
    assert "error: body_timeout must be a positive, finite number of seconds" in result.output
