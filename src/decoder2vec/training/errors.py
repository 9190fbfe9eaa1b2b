"""Errors raised on bad training input. All subclass ``ValueError`` (and the package's ``Decoder2VecError``)."""

from decoder2vec import errors
from decoder2vec.errors import ConfigError, Decoder2VecError


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


class OutputExistsError(TrainingError, errors.OutputExistsError):
    """The output folder already holds a run and neither resume nor overwrite was asked for."""


class SettingError(TrainingError, ConfigError):
    """A recipe setting or flag with the wrong type or an impossible value."""
