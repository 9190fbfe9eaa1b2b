"""Where converted models live. The atomic writers are in :mod:`decoder2vec.io` (re-exported here)."""

from __future__ import annotations

import os
from pathlib import Path

from decoder2vec.errors import ModelLoadError
from decoder2vec.io import make_temp_dir, publish_folder, replace_entries, replace_folder, write_file_atomic

__all__ = [
    "cache_home",
    "is_cached",
    "make_temp_dir",
    "publish_folder",
    "replace_entries",
    "replace_folder",
    "write_file_atomic",
]


def cache_home() -> Path:
    """The decoder2vec cache: ``$DECODER2VEC_HOME``, else ``$XDG_CACHE_HOME/decoder2vec``, else ``~/.cache/decoder2vec``."""
    if env := os.environ.get("DECODER2VEC_HOME"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "decoder2vec"


def is_cached(folder: Path, marker: str) -> bool:
    """Whether a cache entry built by :func:`publish_folder` is there (its ``marker`` file exists).

    False for an absent or empty folder (build it); an error for a folder holding something else, which
    no build of ours leaves behind (publish_folder renames only finished folders into place).
    """
    if (folder / marker).is_file():
        return True
    if folder.exists() and any(folder.iterdir()):
        raise ModelLoadError(
            f"the model cache {folder} is damaged (no {marker}); delete that folder and retry"
        )
    return False
