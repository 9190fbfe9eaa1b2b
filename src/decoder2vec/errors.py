"""Exceptions that name the problem, so the CLI can report them without a traceback.

Every mistake a user can make (bad input, bad settings, a model that cannot load) raises a
:class:`Decoder2VecError` subclass; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class Decoder2VecError(Exception):
    """Base class for every error decoder2vec raises on purpose."""


class ModelLoadError(Decoder2VecError, ValueError):
    """A model path, GGUF file or architecture that cannot be loaded as a decoder encoder."""


class BidirectionalityError(Decoder2VecError, RuntimeError):
    """The attention mode the user asked for is not the one the model actually runs."""


class InputError(Decoder2VecError, ValueError):
    """Input data (a file, a record, a text) that cannot be used; the message names where it is."""


class ConfigError(Decoder2VecError, ValueError):
    """A setting with a wrong type or value; the message names the key (and file)."""


class OutputExistsError(Decoder2VecError, ValueError):
    """An output path holds something decoder2vec did not write, or was written with other settings."""
