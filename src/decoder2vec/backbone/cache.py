"""Where converted models live, and how a folder is published atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_home() -> Path:
    """The decoder2vec cache: ``$DECODER2VEC_HOME``, else ``$XDG_CACHE_HOME/decoder2vec``, else ``~/.cache/decoder2vec``."""
    if env := os.environ.get("DECODER2VEC_HOME"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "decoder2vec"


def publish_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder in a private temporary directory, then rename it into place.

    Readers never see a half-written folder, and when two processes race on a first use the
    loser simply discards its copy: ``os.rename`` of a directory onto an existing non-empty one fails.
    """
    target = Path(target)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # a genuine failure, not a lost race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def replace_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder beside ``target`` and swap it in, replacing any previous one only once complete.

    Unlike :func:`publish_folder` (first writer wins, for caches), the newest folder wins: the old one
    is moved aside before the new one is renamed into place, so ``target`` is never half written.
    """
    target = Path(target).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old = None
    try:
        build(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "previous")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def write_file_atomic(path: Path, data: str | bytes) -> None:
    """Write a file through a temporary sibling and ``os.replace``, so it is never half written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private (0600); outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
