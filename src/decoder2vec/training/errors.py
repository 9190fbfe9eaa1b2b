"""Training's errors; they live in :mod:`decoder2vec.errors` with the rest of the hierarchy."""

from decoder2vec.errors import (
    BatchSizeError,
    CorpusError,
    MissingColumnError,
    ResumeMismatchError,
    SettingError,
    TrainingError,
)
from decoder2vec.errors import RunExistsError as OutputExistsError

__all__ = [
    "BatchSizeError",
    "CorpusError",
    "MissingColumnError",
    "OutputExistsError",
    "ResumeMismatchError",
    "SettingError",
    "TrainingError",
]
