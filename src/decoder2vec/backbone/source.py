"""Where an encoder's files are: an alias, a GGUF file, a folder or a hub id, resolved without torch.

:func:`resolve_model_path` is what every loader and :class:`~decoder2vec.spec.EncoderSpec` start from.
Aliases go through the registry in :mod:`decoder2vec.backbone.default_model` (the shipped bundles are
built on first use, and a GGUF file is converted on first use: those builds load weights, once, and are
then cached); a built alias or an imported GGUF resolves from the cache without importing torch.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

from decoder2vec.errors import ModelLoadError

# The files that describe an encoder (no weights): what a hub id's local snapshot is read for.
DESCRIPTION_FILES = (
    "config.json",
    "decoder2vec_config.json",
    "decoder2vec_static.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "*/config.json",
    "decoder2vec_calibration.npy",  # small: a sample of embeddings
    "2_Dense/*",  # small: the projection after pooling
)


class NotLocalError(ModelLoadError):
    """A hub id whose files are neither in the local Hugging Face cache nor reachable."""


def resolve_model_path(name_or_path: str | Path) -> str:
    """Turn the alias, a GGUF file or a folder into something ``from_pretrained`` can read."""
    from decoder2vec.backbone.default_encoder import default_encoder_folder, shipped_dir
    from decoder2vec.backbone.default_model import (
        ALIASES,
        DEFAULT_MODEL,
        SHIPPED_ENCODERS,
        STATIC_ENCODER,
        default_model_folder,
    )
    from decoder2vec.backbone.gguf_import import cached_gguf_folder, import_gguf

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


def source_kind(name_or_path: str | Path) -> str:
    """What ``name_or_path`` names: ``"alias"``, ``"gguf"``, ``"folder"`` or ``"hub"`` (as given, not resolved)."""
    from decoder2vec.backbone.default_model import ALIASES, STATIC_ENCODER

    name = str(name_or_path)
    if name in ALIASES or name == STATIC_ENCODER:
        return "alias"
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        return "gguf"
    return "folder" if path.is_dir() else "hub"


def local_folder(resolved: str) -> Path:
    """The local folder holding the description files of a resolved model: the folder itself, or a hub id's
    snapshot (its small files only are fetched when the hub is reachable and they are not cached; offline,
    only what the local cache holds)."""
    path = Path(resolved)
    if path.is_dir():
        return path
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(
            snapshot_download(
                resolved, allow_patterns=list(DESCRIPTION_FILES), local_files_only=constants.HF_HUB_OFFLINE
            )
        )
    except Exception as exc:  # huggingface_hub raises many types (offline, missing, unauthorised)
        raise NotLocalError(
            f"cannot read the files of hub model {resolved!r}: {exc}; offline, a hub model is read from the "
            "local Hugging Face cache only"
        ) from exc
