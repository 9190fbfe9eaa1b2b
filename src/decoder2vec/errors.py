"""Exceptions that name the problem, so the CLI can report them without a traceback.

Every mistake a user can make (bad input, bad settings, a model that cannot load) raises a
:class:`Decoder2VecError` subclass; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class Decoder2VecError(Exception):
    """Base class for every error decoder2vec raises on purpose."""


class ModelLoadError(Decoder2VecError, ValueError):
    """A model path, GGUF file or architecture that cannot be loaded as a decoder encoder."""


class BidirectionalityError(Decoder2VecError, RuntimeError):
    """The attention mode the user asked for is not the one the model actually runs."""


class InputError(Decoder2VecError, ValueError):
    """Input data (a file, a record, a text) that cannot be used; the message names where it is.

    ``param`` names the request field at fault where there is one (``input``, ``dimensions``): the server
    answers it as ``error.param``."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class ConfigError(Decoder2VecError, ValueError):
    """A setting with a wrong type or value; the message names the key (and file)."""


class OutputExistsError(Decoder2VecError, ValueError):
    """An output path holds something decoder2vec did not write, or was written with other settings."""


# ------------------------------------------------------------------ evaluation data
class DataFormatError(InputError):
    """An evaluation file that cannot be read as the task it claims to be.

    The message always names the file, and the line when one line is at fault, so a user can open the file
    and fix it without reading a traceback.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


# ------------------------------------------------------------------ training
class TrainingError(Decoder2VecError, ValueError):
    """Base class for bad training input or state."""


class CorpusError(TrainingError):
    """The corpus is empty, unreadable, or its texts are too short to train on."""


class MissingColumnError(TrainingError):
    """A JSONL record lacks a required field."""


class BatchSizeError(TrainingError):
    """The batch size cannot be served by the data (e.g. larger than the data set)."""


class ResumeMismatchError(TrainingError):
    """A resume folder was written by a different model or recipe."""


class RunExistsError(TrainingError, OutputExistsError):
    """The output folder already holds a run and neither resume nor overwrite was asked for."""


class SettingError(TrainingError, ConfigError):
    """A recipe setting or flag with the wrong type or an impossible value."""
