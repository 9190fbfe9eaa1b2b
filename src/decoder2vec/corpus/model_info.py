"""What a model will produce (pooling, dimension, token limit), read from its config without loading weights.

The manifest needs these before any shard is written; reading them from config files lets a
mismatch fail before a model loads, and lets the Ray driver skip loading a model it never runs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from decoder2vec.errors import ConfigError, Decoder2VecError, ModelLoadError
from decoder2vec.static_format import is_static_folder


def model_identity(model: str) -> str:
    """The string the manifest records and every worker loads: an absolute path for local files."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def describe_model(
    model: str, pooling: str | None = None, max_length: int | None = None, instruction: str | None = None
) -> dict[str, Any]:
    """``{"pooling", "dimension", "max_length", "model_fingerprint"}`` as ``Encoder.from_pretrained`` will
    set them (read from the encoder's spec); an ``instruction`` that leaves no room for text is refused here,
    on the tokenizer alone."""
    from decoder2vec.spec import EncoderSpec, resolve_model_path

    path = resolve_model_path(model)
    if is_static_folder(path):
        return describe_static(path, pooling, max_length, instruction)
    try:
        spec = EncoderSpec.read(path, pooling=pooling)
    except Decoder2VecError:
        raise  # the model's files: the message names the file and the field
    except (ValueError, TypeError) as exc:  # the flag's value
        raise ConfigError(f"--pooling: {exc}") from None
    context = spec.context_length
    if max_length is not None:
        if max_length < 2 or (context is not None and max_length > context):
            raise ConfigError(
                f"--max-length {max_length} must be between 2 and the model's context of {context} tokens"
            )
        spec = spec.override(max_length=max_length)
    if instruction:
        check_instruction_fits(spec.path, instruction, spec.max_length, spec.append_eos)
    return {
        "pooling": spec.pooling,
        "dimension": spec.width,
        "max_length": spec.max_length,
        "model_fingerprint": model_fingerprint(path),
    }


def describe_static(path: str, pooling: str | None, max_length: int | None, instruction: str | None) -> dict:
    """:func:`describe_model` for a static (model2vec) folder: what ``StaticEncoder`` will be, checked on its
    files alone (the settings it refuses fail here, before any shard)."""
    from decoder2vec.encoding.static import StaticEncoder
    from decoder2vec.static_format import STATIC_MAX_LENGTH

    try:
        encoder = StaticEncoder.from_pretrained(path, pooling=pooling, max_length=max_length)
        encoder.check_instruction(instruction)
    except ValueError as exc:  # ModelLoadError, InputError: a flag that does not apply
        raise ConfigError(str(exc)) from None
    return {
        "pooling": encoder.pooling,
        "dimension": encoder.embedding_dim,
        "max_length": int(max_length or STATIC_MAX_LENGTH),
        "model_fingerprint": model_fingerprint(path),
    }


# Bytes read from each file for the fingerprint: all of a small file, evenly spaced samples of a large one.
_WHOLE_FILE = 4 << 20
_SAMPLES, _SAMPLE_BYTES = 16, 64 << 10


def model_fingerprint(path: str) -> str | None:
    """A digest of a model folder's files, so a resumed run refuses a model changed under the same name.

    Names and sizes of every file, the whole of each small one (configs, tokenizer) and 16 spaced 64 KiB
    samples of each large one (weights: retraining changes nearly every byte, so samples see it) -
    seconds for any model size, where hashing 28 GB of a 7B model would take minutes. ``None`` for a hub
    id that is not a local folder.
    """
    folder = Path(path)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(folder).as_posix()}\0{size}\0".encode())
        with file.open("rb") as handle:
            if size <= _WHOLE_FILE:
                digest.update(handle.read())
                continue
            for k in range(_SAMPLES):
                handle.seek((size - _SAMPLE_BYTES) * k // (_SAMPLES - 1))
                digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def check_instruction_fits(path: str, instruction: str, max_length: int, append_eos: bool) -> None:
    """Build one sequence with the model folder's tokenizer: an instruction too long for it is a ConfigError."""
    from decoder2vec.backbone.loading import load_tokenizer
    from decoder2vec.encoding.tokenization import SequenceBuilder

    try:
        SequenceBuilder(load_tokenizer(path), max_length, append_eos).build(["text"], [instruction])
    except ValueError as exc:
        raise ConfigError(f"--instruction: {exc}") from None


def check_encoder(encoder, expected: dict[str, Any]) -> None:
    """Refuse to embed when the loaded encoder differs from what the manifest records."""
    actual = {
        "pooling": encoder.pooling,
        "dimension": encoder.embedding_dim,
        "max_length": encoder.max_length,
    }
    wrong = [
        f"{key} {actual[key]!r} (manifest: {expected[key]!r})"
        for key in actual
        if actual[key] != expected[key]
    ]
    if wrong:
        raise ModelLoadError(f"the loaded model does not match the manifest: {'; '.join(wrong)}")
