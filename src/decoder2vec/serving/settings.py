"""The server's settings, checked once so the app can trust them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from decoder2vec.backbone.default_model import DEFAULT_ENCODER
from decoder2vec.errors import ConfigError

# TEI's default request size limit.
DEFAULT_PAYLOAD_BYTES = 2_000_000
# Seconds a client has to send the whole request body once its headers are in (else 408): a client that
# stalls mid-body would otherwise hold its connection, and a slot of the server, forever.
DEFAULT_BODY_TIMEOUT = 30.0
# Padded tokens per forward on accelerators (as TEI's default --max-batch-tokens); CPU uses the
# encoder's own cache-friendly budget.
ACCELERATOR_BATCH_TOKENS = 16384
# What one more forward costs, in padded tokens (see batcher.plan_round). On CPU a small forward is
# bound by streaming the weights: for SmolLM2-135M `bench/serve.py --forward-costs` fits ~19 ms +
# ~2.2 ms per padded token on one thread (9 tokens; 12-38 on two, noisy), and a single text costs
# ~30 ms. Planning with 8, 16 or 32 gave the same time within 5% (one thread). On GPUs a small
# forward is bound by kernel launches and padding is nearly free; that figure is not measured here.
CPU_FORWARD_OVERHEAD_TOKENS = 16
ACCELERATOR_FORWARD_OVERHEAD_TOKENS = 4096


@dataclass(frozen=True)
class ServeSettings:
    """What ``decoder2vec serve`` was told; ``None`` means "the model's / encoder's default"."""

    model: str = DEFAULT_ENCODER
    api_key: str | None = None
    max_batch_tokens: int | None = None
    max_client_batch_size: int = 512
    max_queue: int = 8192
    max_length: int | None = None
    max_payload_bytes: int = DEFAULT_PAYLOAD_BYTES
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    served_model_name: str | None = None
    # Run the model in a child process (its own GIL) instead of a thread of the server.
    model_process: bool = False
    dtype: str | None = None
    quantization: str | None = None

    def __post_init__(self) -> None:
        from decoder2vec.backbone.precision import check_precision_options

        check_precision_options(self.dtype, self.quantization)
        for name in ("max_client_batch_size", "max_queue", "max_payload_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be positive, got {self.max_batch_tokens}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"max_length must be at least 2, got {self.max_length}")
        if self.max_queue < self.max_client_batch_size:
            raise ConfigError(
                f"max_queue ({self.max_queue}) must be at least max_client_batch_size "
                f"({self.max_client_batch_size}), or a full-size request could never be accepted"
            )
        if self.api_key is not None and not self.api_key:
            raise ConfigError("the API key is empty; leave it unset to serve without one")
        if not (math.isfinite(self.body_timeout) and self.body_timeout > 0):  # NaN, inf: never times out
            raise ConfigError(
                f"body_timeout must be a positive, finite number of seconds, got {self.body_timeout}"
            )

    @property
    def model_name(self) -> str:
        """The ``model`` id the API reports."""
        return self.served_model_name or self.model


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only admits clients of this machine (``localhost``, ``127.x``, ``::1``)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning for serving beyond this machine without an API key, or None."""
    if api_key is not None or is_loopback(host):
        return None
    return (
        f"serving on {host} without an API key: anyone who can reach this port can use the model. "
        "Set --api-key (or DECODER2VEC_API_KEY), or bind 127.0.0.1 behind a proxy that authenticates"
    )
