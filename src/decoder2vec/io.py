"""Atomic file and folder writes, JSON output and a JSONL reader with line numbers.

Every module that writes results (backbone cache, encoder saving, training, evaluation, analysis,
serving, corpus embedding, export) goes through here, so "never half written" is one rule in one place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from decoder2vec.errors import InputError, OutputExistsError


def _umask() -> int:
    # os.umask can only be read by setting it; put it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode(executable: bool = False) -> int:
    """The mode ``open()`` (or ``mkdir`` for ``executable``) would give a new entry under the umask.

    Temporary files and folders (mkstemp 0600, mkdtemp 0700, and libraries that write through them, such
    as safetensors' ``save_file``) are private; what we publish gets the ordinary mode, so another user
    or a container running under another uid can read a saved model when the umask allows it."""
    return (0o777 if executable else 0o666) & ~_umask()


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh directory in ``parent`` with the mode a plain ``mkdir`` would give (mkdtemp makes 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, file_mode(executable=True))
    return tmp


def fsync_file(path: str | Path) -> None:
    """Flush a written file to disk, so a rename that publishes it never publishes an empty file after a
    power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def settle_tree(root: Path) -> None:
    """Give everything under ``root`` (built in a temporary folder) its ordinary mode under the umask and
    flush its files to disk, before ``root`` is renamed into place. Symbolic links are left alone."""
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, file_mode(executable=True))
        for name in files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISREG(mode):
                continue
            os.chmod(path, file_mode(executable=bool(mode & 0o111)))
            fsync_file(path)


def write_file_atomic(path: str | Path, data: str | bytes) -> None:
    """Write a file through a temporary sibling, flush it to disk and ``os.replace`` it into place, so it
    is never half written (nor empty after a crash); it gets the ordinary mode under the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())  # mkstemp makes it private (0600); outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_inside(path: str | Path, root: str | Path) -> Path:
    """Refuse (an :class:`OutputExistsError`) to write ``path`` unless it lies inside the output folder
    ``root`` with no symbolic link on the way, itself included: a link planted in an output folder (say
    ``metrics.jsonl`` -> a file elsewhere) would send an append, a rewrite or a deletion outside it.
    ``root`` itself is the user's choice and may be a link."""
    root, path = Path(root), Path(path)
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise OutputExistsError(f"{path} is not inside the output folder {root}") from None
    current = root
    for part in parts:
        current = current / part
        if part == ".." or current.is_symlink():
            raise OutputExistsError(
                f"{current} is a symbolic link (or leaves {root}); decoder2vec writes only its own files "
                "inside the output folder: remove it and run again"
            )
    return path


def append_line(path: str | Path, line: str, *, root: str | Path) -> None:
    """Append one line to a log file of the output folder ``root`` (``metrics.jsonl``), creating it with
    the ordinary mode: never through a symbolic link (``O_NOFOLLOW`` closes the gap after the check) nor
    into anything but a plain file."""
    path = check_inside(path, root)
    if path.exists() and not path.is_file():  # a FIFO would block the run, a device take the lines
        raise OutputExistsError(f"{path} is not a plain file; remove it and run again")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(path, flags, file_mode())
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OutputExistsError(f"{path} is not a plain file; remove it and run again")
        fh.write(line + "\n")


def check_new_file(
    path: Path, *, overwrite: bool, inputs: Iterable[str | Path] = (), flag: str = "--out"
) -> None:
    """Refuse, before any work, an output file that exists (unless ``overwrite``) or that is one of the
    ``inputs`` (always: writing it would destroy what is being read). Hard and symbolic links to an input
    count as the input."""
    for source in inputs:
        source = Path(source).expanduser()
        if path.exists() and source.exists() and os.path.samefile(path, source):
            raise OutputExistsError(
                f"{flag} {path} is the input {source}; writing it would destroy the input, choose another file"
            )
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{flag} {path} already exists; pass --overwrite to replace it")


def json_safe(value: Any) -> Any:
    """Replace NaN/inf floats by ``None`` (JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically. NaN is refused (it is not JSON): a caller that may
    hold NaN says what it means first, e.g. with :func:`json_safe` and a note."""
    write_file_atomic(Path(path), json.dumps(payload, indent=2, allow_nan=False) + "\n")


def publish_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder in a temporary sibling, then rename it into place (first writer wins).

    Readers never see a half-written folder, and when two processes race on a first use the
    loser simply discards its copy: ``os.rename`` of a directory onto an existing non-empty one fails.
    """
    target = Path(target)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target.parent, f".{target.name}.tmp-")
    try:
        build(tmp)
        settle_tree(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # a genuine failure, not a lost race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def replace_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder beside ``target`` and swap it in whole (newest wins).

    Only for folders that belong to decoder2vec entirely (a run's ``adapter/`` or ``merged/``): the
    previous folder is moved aside and deleted. For user-chosen outputs use :func:`replace_entries`.
    """
    target = Path(target).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target.parent, f".{target.name}.tmp-")
    old = None
    try:
        build(tmp)
        settle_tree(tmp)
        if target.exists():
            old = make_temp_dir(target.parent, f".{target.name}.old-")
            os.replace(target, old / "previous")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def replace_entries(
    target: Path, build: Callable[[Path], None], *, owned: Callable[[str], bool] | None = None
) -> Path:
    """Build a folder's entries in a temporary sibling, then move each into ``target``.

    Only the entries the build wrote are replaced (each with an atomic rename); anything else in
    ``target`` — a user's README, a reports/ folder — is left alone. Entries named by ``owned`` that
    the new build did not write (stale files of a previous run) are removed.
    """
    target = Path(target).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target.parent, f".{target.name}.tmp-")
    trash = None
    try:
        build(tmp)
        settle_tree(tmp)
        written = {p.name for p in tmp.iterdir()}
        stale = [p for p in target.iterdir() if p.name not in written and owned is not None and owned(p.name)]
        for entry in sorted(written):
            src, dst = tmp / entry, target / entry
            if dst.is_dir() and not dst.is_symlink():
                trash = trash or make_temp_dir(target.parent, f".{target.name}.old-")
                os.replace(dst, trash / entry)  # a directory cannot be renamed onto a non-empty one
            os.replace(src, dst)
        for path in stale:
            trash = trash or make_temp_dir(target.parent, f".{target.name}.old-")
            os.replace(path, trash / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    return target


def decode_lines(data: bytes, name: str, fix: str = "re-save the file as UTF-8") -> list[str]:
    r"""UTF-8 ``data`` split into lines at ``\n`` (``\r\n`` too); undecodable bytes are an
    :class:`InputError` naming ``name`` and the line (``fix`` says what to do about it).

    Not ``str.splitlines``: it also breaks at form feeds, U+2028 and other separators, which split one
    record in two, shift every later line number, and cut JSON strings that hold them raw.
    """
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{name}:{line}: not valid UTF-8 ({exc.reason} at byte {exc.start}); {fix}"
        ) from None
    if lines[-1] == "":  # the final newline ends the last line; it does not start another
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_text_lines(path: str | Path) -> list[str]:
    """A UTF-8 file's lines; undecodable bytes are an :class:`InputError` naming file and line."""
    return decode_lines(Path(path).read_bytes(), str(path))


def check_unicode(text: str, where: str) -> str:
    """Reject lone surrogates (from JSON ``\\ud800`` escapes), which no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{where}: broken Unicode (lone surrogate {text[exc.start]!r} at character {exc.start})"
        ) from None
    return text


def iter_jsonl(
    path: str | Path,
    lines: list[str] | None = None,
    *,
    error: Callable[[int, str], Exception] | None = None,
) -> Iterator[tuple[int, Any]]:
    """``(line_number, record)`` for each non-blank line of a JSONL file (read as UTF-8 unless ``lines``
    are given). Bad JSON raises ``error(line, detail)`` — by default an :class:`InputError` naming file
    and line — so each reader keeps its own error type while sharing one parser."""
    name = str(path)
    if lines is None:
        lines = read_text_lines(path)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            if error is not None:
                raise error(number, exc.msg) from None
            raise InputError(f"{name}:{number}: not valid JSON ({exc.msg})") from None
