"""An encoder described without loading it: settings, widths and modules, read from its files (no torch).

:class:`EncoderSpec` is the one place an encoder's settings are resolved from a folder, an alias, a GGUF
file or a hub id; :func:`resolve_model_path` finds the files. A low layer: it imports
:mod:`decoder2vec.errors`, :mod:`decoder2vec.encoder_config` (the file format), :mod:`decoder2vec.io` and
the alias registry in :mod:`decoder2vec.backbone` (on use), nothing that imports torch.
"""

from decoder2vec.backbone.source import NotLocalError, resolve_model_path, source_kind
from decoder2vec.spec.encoder_spec import OVERRIDES, EncoderSpec, Module

__all__ = ["OVERRIDES", "EncoderSpec", "Module", "NotLocalError", "resolve_model_path", "source_kind"]
