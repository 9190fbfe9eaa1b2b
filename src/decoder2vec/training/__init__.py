"""Training: MNTP, unsupervised SimCSE and supervised contrastive learning (LLM2Vec stages 2 and 3).

Components (math, data, loop) live in this package's modules; the stage recipes that wire them to a
backbone live in ``decoder2vec.training.recipes``.
"""

from decoder2vec.training.errors import (
    BatchSizeError,
    CorpusError,
    MissingColumnError,
    OutputExistsError,
    ResumeMismatchError,
    TrainingError,
)

__all__ = [
    "BatchSizeError",
    "CorpusError",
    "MissingColumnError",
    "OutputExistsError",
    "ResumeMismatchError",
    "TrainingError",
]
