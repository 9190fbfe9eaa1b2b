"""Throughput and latency of ``decoder2vec serve`` against offline ``Encoder.encode``, side by side.

    python bench/serve.py [--texts 128] [--clients 1 8 64] [--texts-per-request 1] [--repeats 3] [--threads N]
    python bench/serve.py --forward-costs [--threads N]

``--forward-costs`` instead times forwards of several shapes and fits ``seconds = a + b * padded
tokens``: ``a / b`` is what one more forward costs in padded tokens, the figure behind the server's
``CPU_FORWARD_OVERHEAD_TOKENS``.

The server runs as a real ``decoder2vec serve`` subprocess on a loopback port; clients are asyncio
tasks sharing one HTTP connection pool, each sending one request at a time (base64, as the openai
client does by default). Offline encoding of the same texts runs in this process right before each
server run; each ratio compares such an adjacent pair, and the median of ``--repeats`` pairs is
reported, so drifting load on a shared machine cancels out as far as it can. Both sides use the same
number of torch threads. Each request's latency is recorded (p50/p99 over all repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import sts_sentences, timed, write_results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, port: int, threads: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "decoder2vec.cli", "serve", "--model", model, "--port", str(port)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    process = subprocess.Popen(command + ["--log-level", "warning", *extra], env=env)
    deadline = time.monotonic() + 600
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the server never became ready")
        time.sleep(0.2)


async def drive(url: str, requests: list[list[str]], clients: int) -> tuple[float, list[float], int]:
    """Send ``requests`` from ``clients`` concurrent clients; returns (seconds, latencies, prompt tokens)."""
    pending = list(reversed(requests))
    latencies: list[float] = []
    tokens = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while pending:
            texts = pending.pop()
            start = time.perf_counter()
            response = await http.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"})
            latencies.append(time.perf_counter() - start)
            response.raise_for_status()
            tokens += response.json()["usage"]["prompt_tokens"]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - start, latencies, tokens


def forward_costs(encoder, repeats: int = 3) -> dict:
    """Least-squares fit of a forward's time as overhead + per-padded-token cost (best of ``repeats``)."""
    from decoder2vec.encoding.tokenization import Sequence

    ids = encoder.builder.build(["a few words of text " * 20])[0].ids
    shapes = [(1, 1), (1, 8), (1, 16), (4, 8), (8, 8), (16, 8), (8, 32), (32, 8), (32, 16), (64, 16)]
    rows = []
    for n, length in shapes:
        batch = [Sequence(ids[:length], 0, False) for _ in range(n)]
        encoder.forward_sequences(batch)
        best = min(timed(partial(encoder.forward_sequences, batch))[0] for _ in range(repeats))
        rows.append((n * length, best))
        print(f"{n:>4} x {length:<3} {1000 * best:8.1f} ms")
    tokens, seconds = np.array(rows).T
    per_token, overhead = np.polyfit(tokens, seconds, 1)
    print(
        f"forward = {1000 * overhead:.1f} ms + {1000 * per_token:.2f} ms/padded token: "
        f"one forward costs {overhead / per_token:.1f} padded tokens"
    )
    return {
        "overhead_ms": 1000 * overhead,
        "per_token_ms": 1000 * per_token,
        "overhead_tokens": overhead / per_token,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32, help="Offline encode batch size.")
    parser.add_argument("--repeats", type=int, default=3, help="Offline/served pairs per client count.")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="Torch threads, both sides."
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="Extra `serve` option (repeatable)."
    )
    parser.add_argument(
        "--forward-costs", action="store_true", help="Only fit a forward's time (overhead + per token)."
    )
    args = parser.parse_args()

    from decoder2vec import Encoder

    torch.set_num_threads(args.threads)
    if args.forward_costs:
        fit = forward_costs(Encoder.from_pretrained(args.model))
        print(f"wrote {write_results(f'serve-forward-costs-{args.threads}-threads', fit)}")
        return
    texts = sts_sentences(args.texts)
    encoder = Encoder.from_pretrained(args.model)
    tokens = sum(len(s.ids) for s in encoder.builder.build(texts))
    encoder.encode(texts[:8])  # warm-up

    def offline() -> float:
        start = time.perf_counter()
        encoder.encode(texts, batch_size=args.batch_size)
        return time.perf_counter() - start

    port = free_port()
    server = start_server(args.model, port, args.threads, args.server_arg)
    url = f"http://127.0.0.1:{port}"
    requests = [texts[i : i + args.texts_per_request] for i in range(0, len(texts), args.texts_per_request)]
    runs = {}
    try:
        asyncio.run(drive(url, requests[:8], 8))  # warm-up
        for clients in args.clients:
            pairs, all_latencies = [], []
            for _ in range(args.repeats):
                offline_seconds = offline()
                seconds, latencies, served_tokens = asyncio.run(drive(url, requests, clients))
                assert served_tokens == tokens, (served_tokens, tokens)
                pairs.append((offline_seconds, seconds))
                all_latencies += latencies
            offline_median, served_median = np.median(pairs, axis=0)
            runs[clients] = {
                "pairs_seconds": pairs,
                "offline_seconds": float(offline_median),
                "seconds": float(served_median),
                "ratio_to_offline": float(np.median([o / s for o, s in pairs])),
                "p50_ms": 1000 * float(np.percentile(all_latencies, 50)),
                "p99_ms": 1000 * float(np.percentile(all_latencies, 99)),
            }
    finally:
        server.terminate()
        server.wait(timeout=120)

    print(
        f"{len(texts)} STS-B sentences, {tokens} tokens, {args.texts_per_request} text(s) per request, "
        f"{os.cpu_count()} CPUs, {args.threads} torch thread(s), median of {args.repeats} pairs"
    )
    header = (
        "clients",
        "offline texts/s",
        "served texts/s",
        "served tokens/s",
        "of offline",
        "p50 ms",
        "p99 ms",
    )
    print("{:>7} {:>15} {:>14} {:>15} {:>10} {:>7} {:>7}".format(*header))
    for clients, run in runs.items():
        print(
            f"{clients:>7} {len(texts) / run['offline_seconds']:>15.1f} {len(texts) / run['seconds']:>14.1f} "
            f"{tokens / run['seconds']:>15.0f} {run['ratio_to_offline']:>9.2f}x {run['p50_ms']:>7.0f} "
            f"{run['p99_ms']:>7.0f}"
        )
    result_name = "serve" if args.texts_per_request == 1 else f"serve-{args.texts_per_request}-per-request"
    if "--model-process" in args.server_arg:
        result_name += "-model-process"
    payload = {
        "texts": len(texts),
        "tokens": tokens,
        "texts_per_request": args.texts_per_request,
        "clients": runs,
    }
    print(f"wrote {write_results(result_name, payload)}")


if __name__ == "__main__":
    main()
