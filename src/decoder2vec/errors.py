"""Exceptions that name the problem, so the CLI can report them without a traceback."""

from __future__ import annotations


class Decoder2VecError(Exception):
    """Base class for every error decoder2vec raises on purpose."""


class ModelLoadError(Decoder2VecError, ValueError):
    """A model path, GGUF file or architecture that cannot be loaded as a decoder encoder."""


class BidirectionalityError(Decoder2VecError, RuntimeError):
    """The attention mode the user asked for is not the one the model actually runs."""
