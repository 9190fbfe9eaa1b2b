"""Where the model runs: in this process (a thread) or in a child process of its own.

A forward is hundreds of small torch calls, each of which needs the GIL back when it returns; in the
server process that GIL is shared with the event loop parsing HTTP for every client, and the forward
waits for it (measured: a busy second Python thread slows a CPU forward by 1.5-2.5x). A child process
has a GIL of its own: with ``--model-process`` the model runs there and is sent only token ids; the
HTTP side keeps the tokenizer (the child's own, sent back once) to build sequences. On the 2-core
benchmark machine the extra process cost as much as it saved (see BENCHMARKS.md), so it is opt-in.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from decoder2vec.encoding.encoder import CPU_BATCH_TOKENS, Encoder
from decoder2vec.encoding.static import StaticEncoder
from decoder2vec.encoding.tokenization import Sequence, SequenceBuilder
from decoder2vec.errors import ModelLoadError
from decoder2vec.serving.settings import (
    ACCELERATOR_BATCH_TOKENS,
    ACCELERATOR_FORWARD_OVERHEAD_TOKENS,
    CPU_FORWARD_OVERHEAD_TOKENS,
    ServeSettings,
)


@dataclass(frozen=True)
class ModelInfo:
    """What the HTTP side needs to know about the model."""

    builder: SequenceBuilder
    embedding_dim: int
    vocab_size: int
    max_batch_tokens: int
    forward_overhead_tokens: int
    description: str
    matryoshka_dimensions: list[int] | None = None
    calibration: np.ndarray | None = None  # raw pooled embeddings of a text sample: int8 ranges


class ServedModel(Protocol):
    info: ModelInfo

    @property
    def alive(self) -> bool: ...

    def embed(self, sequences: list[Sequence]) -> torch.Tensor: ...

    def close(self) -> None: ...


def load_checked_encoder(settings: ServeSettings) -> Encoder | StaticEncoder:
    """Load the encoder (never with remote code) and prove its attention mode."""
    from decoder2vec.backbone.loading import check_attention
    from decoder2vec.encoding.encoder import load_encoder

    encoder = load_encoder(
        settings.model,
        max_length=settings.max_length,
        dtype=settings.dtype,
        quantization=settings.quantization,
    )
    if not isinstance(encoder, StaticEncoder):  # a static model has no attention to prove
        check_attention(encoder.model, encoder.tokenizer)  # raises BidirectionalityError on a mismatch
    return encoder


def describe(encoder: Encoder | StaticEncoder, settings: ServeSettings) -> ModelInfo:
    on_cpu = encoder.device.type == "cpu"
    budget = settings.max_batch_tokens or encoder.max_batch_tokens
    if budget is None:
        budget = CPU_BATCH_TOKENS if on_cpu else ACCELERATOR_BATCH_TOKENS
    return ModelInfo(
        builder=encoder.builder,
        embedding_dim=encoder.embedding_dim,
        vocab_size=encoder.vocab_size
        if isinstance(encoder, StaticEncoder)
        else encoder.model.get_input_embeddings().num_embeddings,
        max_batch_tokens=budget,
        forward_overhead_tokens=CPU_FORWARD_OVERHEAD_TOKENS
        if on_cpu
        else ACCELERATOR_FORWARD_OVERHEAD_TOKENS,
        description=repr(encoder),
        matryoshka_dimensions=encoder.matryoshka_dimensions,
        calibration=encoder.calibration,
    )


class InProcessModel:
    """The encoder in this process; forwards run in the batcher's thread."""

    def __init__(self, encoder: Encoder, settings: ServeSettings) -> None:
        self.encoder = encoder
        self.info = describe(encoder, settings)

    @property
    def alive(self) -> bool:
        return True

    def embed(self, sequences: list[Sequence]) -> torch.Tensor:
        return self.encoder.forward_sequences(sequences)

    def close(self) -> None:
        pass


class ModelProcess:
    """The encoder in a child process, fed through a pipe (one forward at a time)."""

    def __init__(self, settings: ServeSettings) -> None:
        context = multiprocessing.get_context("spawn")  # fork would copy a process with threads
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_child_main, args=(child_conn, settings), name="decoder2vec-model", daemon=True
        )
        self._process.start()
        child_conn.close()
        self._lock = threading.Lock()
        kind, payload = self._receive()
        if kind != "ready":
            self._process.join(timeout=10)
            raise payload
        self.info: ModelInfo = payload

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def _receive(self):
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            code = self._process.exitcode
            raise RuntimeError(f"the model process ended unexpectedly (exit code {code})") from None

    def embed(self, sequences: list[Sequence]) -> torch.Tensor:
        with self._lock:
            self._conn.send(sequences)
            kind, payload = self._receive()
        if kind != "rows":
            raise RuntimeError(payload)
        return torch.from_numpy(payload)

    def close(self) -> None:
        try:
            with self._lock:
                self._conn.send(None)
        except (OSError, ValueError):
            pass  # already gone
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def _child_main(conn, settings: ServeSettings) -> None:
    # Only the parent decides when the model stops (after draining): a Ctrl-C sent to the whole
    # process group, or a stray SIGTERM, must not kill forwards that requests still wait for.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from decoder2vec.backbone.model_io import quiet_transformers

    quiet_transformers()
    try:
        encoder = load_checked_encoder(settings)
    except Exception as exc:  # noqa: BLE001 - every load failure goes back to the parent
        conn.send(("error", _picklable(exc)))
        return
    conn.send(("ready", describe(encoder, settings)))
    while True:
        try:
            sequences = conn.recv()
        except EOFError:
            return  # the parent is gone
        if sequences is None:
            return
        try:
            conn.send(("rows", encoder.forward_sequences(sequences).numpy()))
        except Exception as exc:  # noqa: BLE001 - a failed forward fails its requests, not the child
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _picklable(exc: Exception) -> Exception:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception that does not survive pickling is re-described
        return ModelLoadError(f"{type(exc).__name__}: {exc}")
