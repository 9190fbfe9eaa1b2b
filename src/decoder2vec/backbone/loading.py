"""Load a decoder backbone and its tokenizer from an alias, a GGUF file, a folder or a hub id.

Reading and writing a resolved model folder is :mod:`decoder2vec.backbone.model_io`'s (its names are
importable from here as before); this module adds the names: aliases, the shipped encoders (built on first
use), GGUF files and hub ids.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from decoder2vec.backbone.bidirectional import AttentionCheck, verify_attention
from decoder2vec.backbone.default_encoder import default_encoder_folder, shipped_dir
from decoder2vec.backbone.default_model import (
    ALIASES,
    DEFAULT_MODEL,
    SHIPPED_ENCODERS,
    STATIC_ENCODER,
    default_model_folder,
)
from decoder2vec.backbone.gguf_import import cached_gguf_folder, import_gguf
from decoder2vec.backbone.model_io import (
    TESTED_FAMILIES,
    default_dtype,
    load_from_path,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    save_backbone,
)
from decoder2vec.errors import ModelLoadError

__all__ = [
    "TESTED_FAMILIES",
    "check_attention",
    "default_dtype",
    "load_backbone",
    "load_tokenizer",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_path",
    "save_backbone",
]

log = logging.getLogger(__name__)


def resolve_model_path(name_or_path: str | Path) -> str:
    """Turn the alias, a GGUF file or a folder into something ``from_pretrained`` can read."""
    name = str(name_or_path)
    if name == DEFAULT_MODEL:
        return str(default_model_folder())
    if name in SHIPPED_ENCODERS:
        return str(default_encoder_folder(shipped_dir(name)))
    if name == STATIC_ENCODER and shipped_dir(name).is_dir():  # only once a bundle ships
        from decoder2vec.backbone.static_bundle import static_encoder_folder

        return str(static_encoder_folder())
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        folder = cached_gguf_folder(path)
        return str(folder if (folder / "config.json").is_file() else import_gguf(path, folder))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model folder: it has no config.json")
        return str(path)
    if path.exists():
        raise ModelLoadError(
            f"{path} is a file, but not a GGUF file; pass a model folder, a .gguf file or a hub id"
        )
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"no such model folder or file: {path}")
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelLoadError(
            f"{name!r} is neither a local folder, a .gguf file nor an alias ({', '.join(ALIASES)}), and not a "
            "valid hub id (owner/name of letters, digits, '-', '_' and '.')"
        ) from None
    if not _hub_reachable(name):
        raise ModelLoadError(
            f"{name!r} is neither a local folder, a .gguf file nor an alias ({', '.join(ALIASES)}); "
            "as a hub id it is not in the local Hugging Face cache, and the hub cannot be reached"
        )
    return name  # a hub id; transformers will fetch it (or read it from the local hub cache)


def _hub_reachable(repo_id: str) -> bool:
    """True when ``repo_id`` is in the local hub cache or the hub answers; a quick check, so a
    mistyped name fails in milliseconds instead of after transformers' offline retries."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


def load_backbone(
    name_or_path: str | Path,
    *,
    bidirectional: bool = True,
    with_lm_head: bool = False,
    adapters: list[str | Path] | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
    verify: bool = True,
):
    """Load ``(model, tokenizer)`` in the requested attention mode, verified by a probe.

    ``with_lm_head`` gives the causal-LM class (needed for MNTP); otherwise the bare transformer
    whose last hidden states are pooled into embeddings. ``adapters`` are PEFT folders merged in order.
    """
    return load_from_path(
        resolve_model_path(name_or_path),
        bidirectional=bidirectional,
        with_lm_head=with_lm_head,
        adapters=adapters,
        dtype=dtype,
        device=device,
        attn_implementation=attn_implementation,
        verify=verify,
    )


def check_attention(model, tokenizer) -> AttentionCheck:
    """Re-run the self-check for the mode the model is configured for (used by ``decoder2vec info``)."""
    from decoder2vec.backbone.bidirectional import is_bidirectional

    return verify_attention(model, is_bidirectional(model), set(tokenizer.all_special_ids))
