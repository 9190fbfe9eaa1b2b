"""Where converted models live. The atomic writers are in :mod:`decoder2vec.io` (re-exported here)."""

from __future__ import annotations

import os
from pathlib import Path

from decoder2vec.io import make_temp_dir, publish_folder, replace_entries, replace_folder, write_file_atomic

__all__ = [
    "cache_home",
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
