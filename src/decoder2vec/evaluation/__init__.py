"""Evaluation of text encoders on local data (STS-B, SICK-R, custom tasks) and through MTEB.

``mteb`` is optional: :func:`mteb_model` imports it only when called.
"""

from __future__ import annotations

import importlib
from typing import Any

# Exports resolve on first use (PEP 562): the CLI imports this package to register its commands, and should
# not pay for scikit-learn and scipy unless an evaluation actually runs.
_EXPORTS = {
    "DataFormatError": "decoder2vec.evaluation.errors",
    "EchoEncoder": "decoder2vec.evaluation.encoders",
    "EvalTask": "decoder2vec.evaluation.tasks",
    "SentenceTransformerEncoder": "decoder2vec.evaluation.encoders",
    "TextEncoder": "decoder2vec.evaluation.encoders",
    "evaluate_task": "decoder2vec.evaluation.evaluators",
    "load_sick": "decoder2vec.evaluation.loaders",
    "load_stsb": "decoder2vec.evaluation.loaders",
    "load_task_dir": "decoder2vec.evaluation.loaders",
}

__all__ = [
    "DataFormatError",
    "EchoEncoder",
    "EvalTask",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "evaluate_task",
    "load_sick",
    "load_stsb",
    "load_task_dir",
    "mteb_model",
]


def mteb_model(model_or_encoder: Any, **kwargs: Any) -> Any:
    """Wrap an ``Encoder``, a model path/alias, or any :class:`TextEncoder` for ``mteb.evaluate``.

    Keyword arguments go to :class:`decoder2vec.evaluation.mteb_adapter.MTEBEncoder` (``instructions``,
    ``batch_size``, ``model_name``) and, when a path is given, to ``Encoder.from_pretrained``.
    """
    from decoder2vec.evaluation.mteb_adapter import make_mteb_model

    return make_mteb_model(model_or_encoder, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
