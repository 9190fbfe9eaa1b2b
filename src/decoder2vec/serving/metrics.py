"""Prometheus metrics of one server, in its own registry (several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ENDPOINTS = ("/v1/embeddings", "/v1/models", "/health", "/metrics")
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServerMetrics:
    """Requests by endpoint and status, latency, forward batch sizes, queue depth, embedded tokens."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "decoder2vec_requests",
            "HTTP requests by endpoint and status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "decoder2vec_request_duration_seconds",
            "HTTP request latency.",
            ["endpoint"],
            registry=self.registry,
        )
        self.batch_texts = Histogram(
            "decoder2vec_batch_texts",
            "Texts per model forward.",
            buckets=_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.batch_tokens = Histogram(
            "decoder2vec_batch_tokens",
            "Real (non-padding) tokens per model forward.",
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "decoder2vec_queue_depth", "Texts accepted and not yet answered.", registry=self.registry
        )
        self.embedded_tokens = Counter(
            "decoder2vec_embedded_tokens", "Tokens run through the model.", registry=self.registry
        )
        self.embedded_texts = Counter(
            "decoder2vec_embedded_texts", "Texts run through the model.", registry=self.registry
        )
        self.skipped_texts = Counter(
            "decoder2vec_skipped_texts",
            "Texts dropped unrun because their client left.",
            registry=self.registry,
        )

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        # Unknown paths share one label, so scanners cannot grow the label set without bound.
        endpoint = path if path in ENDPOINTS else "other"
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_batch(self, texts: int, tokens: int) -> None:
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(tokens)
        self.embedded_texts.inc(texts)
        self.embedded_tokens.inc(tokens)
