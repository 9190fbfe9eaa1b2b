"""Errors raised by the evaluation loaders."""

from __future__ import annotations

from pathlib import Path

from decoder2vec.errors import Decoder2VecError


class DataFormatError(Decoder2VecError, ValueError):
    """An evaluation file that cannot be read as the task it claims to be.

    The message always names the file, and the line when one line is at fault, so a user can open the file
    and fix it without reading a traceback.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")
