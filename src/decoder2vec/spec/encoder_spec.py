"""EncoderSpec: what an encoder is (settings, widths, modules), read from its files alone.

The one place that resolves an encoder's settings from a folder, an alias, a GGUF file or a hub id: the
corpus driver, the GGUF export's early checks, the distillation teacher and ``Encoder.from_pretrained``
all read it, so they agree. Nothing here imports torch (``config.json`` is read as JSON; transformers'
``AutoConfig``, which imports torch, only for a config that names its width otherwise) and no weights are
read: a damaged or self-contradicting folder fails here, naming the file and the field, before a model
loads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import numpy as np

from decoder2vec.backbone.source import local_folder, resolve_model_path, source_kind
from decoder2vec.encoder_config import (
    CALIBRATION_FILE,
    ENCODER_CONFIG,
    ST_POOLING_KEYS,
    check_matryoshka_dimensions,
    check_pooling_mode,
    check_projection_header,
    default_max_length,
    model_context,
    projection_file,
    read_encoder_config,
)
from decoder2vec.errors import InputError, ModelLoadError
from decoder2vec.static_format import MODEL_TYPE as STATIC_MODEL_TYPE
from decoder2vec.static_format import STATIC_MAX_LENGTH, STATIC_META, is_static_folder
from decoder2vec.static_format import WEIGHTS as STATIC_WEIGHTS

MODULES_FILE = "modules.json"
ST_PREFIX = "sentence_transformers.models."
# The sentence-transformers modules decoder2vec runs, by model kind (the Normalize module is listed, as
# sentence-transformers' own models list it; decoder2vec normalizes when asked, with ``normalize=True``).
DECODER_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
STATIC_MODULES = ("StaticEmbedding", "Normalize")
# What EncoderSpec.read (and Encoder.from_pretrained) let a caller set over what the files say.
OVERRIDES = ("pooling", "max_length", "append_eos", "bidirectional")


@dataclass(frozen=True)
class Module:
    """One entry of the encoder's module chain (as in modules.json) and the width of what it outputs."""

    idx: int
    name: str
    path: str  # its folder, relative to the encoder's ("" for the transformer itself)
    type: str  # e.g. "sentence_transformers.models.Pooling"
    width: int  # of its output vectors (the transformer's: of each token state)

    @property
    def kind(self) -> str:
        """The class name: Transformer, Pooling, Dense, Normalize, StaticEmbedding."""
        return self.type.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder described without loading its weights; build it with :meth:`read`.

    ``width`` is what ``Encoder.encode`` returns per text (the projection's output, else the hidden size);
    ``modules`` is the chain as modules.json lists it (or as ``Encoder.save`` would write it, for a folder
    without one), each with the width it outputs; ``matryoshka_dimensions`` are the prefixes the encoder
    was trained to keep.
    """

    source: str  # as given: alias, GGUF file, folder or hub id
    kind: str  # what the source is: "alias", "gguf", "folder" or "hub"
    path: str  # what the loaders read: the resolved folder, or the hub id
    folder: str  # the local folder the description was read from (a hub id's snapshot)
    model_type: str | None  # the backbone's config.json model_type ("model2vec" for a static model)
    hidden_size: int  # the backbone's width: each token state, and the pooled vector
    num_layers: int | None
    context_length: int | None  # the longest sequence the backbone was built for, when its config says
    pooling: str
    max_length: int  # tokens per text (instruction and special tokens included)
    append_eos: bool
    bidirectional: bool
    projection: tuple[int, int] | None  # (in_features, out_features) of the map after pooling
    matryoshka_dimensions: tuple[int, ...] | None  # largest first
    has_calibration: bool  # a saved calibration sample: int8/uint8 ranges without a corpus sample
    saved: bool  # a saved decoder2vec encoder (decoder2vec_config.json); else the defaults apply
    instruction: str | None  # an instruction baked into the model (a static model's); else given per call
    prompts: tuple[tuple[str, str], ...]  # sentence-transformers' named prompts, (name, text)
    default_prompt_name: str | None
    modules: tuple[Module, ...]
    config: Mapping[str, Any] = field(compare=False, repr=False)  # the backbone's config.json, as read

    # ---------------------------------------------------------------- derived
    @property
    def width(self) -> int:
        """The width of the encoder's vectors: the projection's output, else the hidden size."""
        return self.projection[1] if self.projection else self.hidden_size

    @property
    def widths(self) -> tuple[tuple[str, int], ...]:
        """``(module kind, output width)`` after every module, in order."""
        return tuple((module.kind, module.width) for module in self.modules)

    @property
    def is_static(self) -> bool:
        return self.model_type == STATIC_MODEL_TYPE

    def settings(self) -> dict[str, Any]:
        """The settings an encoder built from this spec gets (``Encoder``'s keywords)."""
        return {
            "pooling": self.pooling,
            "max_length": self.max_length,
            "append_eos": self.append_eos,
            "bidirectional": self.bidirectional,
            "matryoshka_dimensions": list(self.matryoshka_dimensions) if self.matryoshka_dimensions else None,
        }

    def backbone_config(self) -> SimpleNamespace:
        """The backbone's config as attributes (``config.model_type``), as code written for a loaded config
        reads it."""
        return SimpleNamespace(**self.config)

    # ---------------------------------------------------------------- reading
    @classmethod
    def read(cls, name_or_path: str | Path, **overrides: Any) -> EncoderSpec:
        """The spec of an alias, GGUF file, folder or hub id, with ``overrides`` (``pooling``, ``max_length``,
        ``append_eos``, ``bidirectional``; None keeps the saved value) applied and checked.

        A shipped alias not yet built, or a GGUF file not yet converted, is built first (it is then cached:
        the only case that reads weights). A hub id is read from the local Hugging Face cache (offline:
        only from there; online its small description files are fetched when missing).
        """
        _check_override_names(overrides)
        source = str(name_or_path)
        kind = source_kind(source)
        path = resolve_model_path(name_or_path)
        folder = local_folder(path)
        read = _read_static if is_static_folder(folder) else _read_decoder
        return read(source, kind, path, folder).override(**overrides)

    def override(self, **overrides: Any) -> EncoderSpec:
        """This spec with ``overrides`` applied, each checked (errors name the setting); None keeps a value."""
        _check_override_names(overrides)
        changes = {}
        for key, value in overrides.items():
            if value is None:
                continue
            if self.is_static and key != "max_length":
                if value == getattr(self, key):
                    continue
                raise ValueError(
                    f"{self.folder} is a static model (mean of token vectors, no transformer): "
                    f"{key}={value!r} does not apply to it"
                )
            if key == "pooling":
                value = check_pooling_mode(value)
            elif key == "max_length":
                value = _check_max_length(value, self.context_length)
            elif not isinstance(value, bool | np.bool_):
                raise TypeError(f"{key} must be True or False, got {value!r}")
            changes[key] = bool(value) if key in ("append_eos", "bidirectional") else value
        return replace(self, **changes) if changes else self


def _check_override_names(overrides: dict) -> None:
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(f"unknown encoder setting {unknown[0]!r}; the settings are {', '.join(OVERRIDES)}")


def _check_max_length(value: Any, context: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"max_length must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"max_length must be positive, got {value}")
    if context is not None and value > context:
        raise ValueError(f"max_length={value} exceeds the model's context of {context} tokens")
    return int(value)


# ------------------------------------------------------------------ a decoder encoder
def _read_decoder(source: str, kind: str, path: str, folder: Path) -> EncoderSpec:
    config_file = folder / "config.json"
    top = _read_json(config_file, ModelLoadError, "cannot read the model config")
    config = top.get("text_config") if isinstance(top.get("text_config"), dict) else top
    if not _positive_int(config.get("hidden_size")):
        config = _auto_config(folder)  # a config that names its width otherwise (transformers' attribute_map)
    hidden = config.get("hidden_size")
    if not _positive_int(hidden):
        raise ModelLoadError(
            f"{config_file}: no 'hidden_size' (a positive integer): the model's width is unknown"
        )
    context = model_context(SimpleNamespace(**config))
    context = int(context) if _positive_int(context) else None

    saved_file = folder / ENCODER_CONFIG
    saved = read_encoder_config(folder)
    if not isinstance(saved, dict):
        raise InputError(f"{saved_file} must hold a JSON object of settings, found {type(saved).__name__}")
    pooling = _saved_pooling(saved, saved_file)
    max_length = saved.get("max_length")
    if max_length is None:  # the default, capped at the model's context
        max_length = default_max_length(SimpleNamespace(max_position_embeddings=context))
    else:
        max_length = _saved(saved_file, "max_length", lambda: _check_max_length(max_length, context))
    flags = {name: saved.get(name) for name in ("append_eos", "bidirectional")}
    for name, value in flags.items():
        if value is not None and not isinstance(value, bool):
            raise InputError(f"{saved_file}: '{name}' must be true or false, found {value!r}")
    projection = _saved_projection(saved, saved_file, hidden, config_file)
    if projection:  # the weights are there, and their header says the recorded shape
        check_projection_header(projection_file(folder, saved), (projection[1], projection[0]))
    width = projection[1] if projection else hidden
    dims = _saved(
        saved_file,
        "matryoshka_dimensions",
        lambda: check_matryoshka_dimensions(saved.get("matryoshka_dimensions"), width),
    )

    modules = _read_modules(folder, DECODER_MODULES)
    if modules is None:  # what Encoder.save writes
        modules = _implied_modules(projection is not None)
    chain = _decoder_chain(modules, folder, hidden, projection, saved_file if saved else None, pooling)
    if saved:
        _check_sentence_bert_config(
            folder, max_length if saved.get("max_length") is not None else None, saved_file
        )
    prompts, default_prompt = _read_prompts(folder)
    return EncoderSpec(
        source=source,
        kind=kind,
        path=path,
        folder=str(folder),
        model_type=config.get("model_type") or top.get("model_type"),
        hidden_size=int(hidden),
        num_layers=config.get("num_hidden_layers"),
        context_length=context,
        pooling=pooling,
        max_length=int(max_length),
        append_eos=bool(flags["append_eos"]) if flags["append_eos"] is not None else False,
        bidirectional=bool(flags["bidirectional"]) if flags["bidirectional"] is not None else True,
        projection=projection,
        matryoshka_dimensions=tuple(dims) if dims else None,
        has_calibration=_has_calibration(folder, width),
        saved=bool(saved),
        instruction=None,
        prompts=prompts,
        default_prompt_name=default_prompt,
        modules=chain,
        config=MappingProxyType(dict(config)),
    )


def _saved_pooling(saved: dict, saved_file: Path) -> str:
    pooling = saved.get("pooling")
    if pooling is None:
        return "mean"
    return _saved(saved_file, "pooling", lambda: check_pooling_mode(pooling))


def _saved_projection(
    saved: dict, saved_file: Path, hidden: int, config_file: Path
) -> tuple[int, int] | None:
    """``(in, out)`` of the recorded projection, checked: positive widths, ``in`` the model's hidden size."""
    recorded = saved.get("projection")
    if not recorded:
        return None
    if not isinstance(recorded, dict) or not all(
        _positive_int(recorded.get(key)) for key in ("in_features", "out_features")
    ):
        raise InputError(
            f'{saved_file}: \'projection\' must be {{"in_features": N, "out_features": M}} with positive '
            f"integers, found {recorded!r}"
        )
    shape = int(recorded["in_features"]), int(recorded["out_features"])
    if shape[0] != hidden:
        raise InputError(
            f"{saved_file}: 'projection.in_features' is {shape[0]}, but the model's pooled states are "
            f"{hidden} wide ('hidden_size' in {config_file})"
        )
    return shape


def _implied_modules(projected: bool) -> list[dict]:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": ST_PREFIX + "Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_PREFIX + "Pooling"},
    ]
    if projected:
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": ST_PREFIX + "Dense"})
    return modules


def _decoder_chain(
    modules: list[dict],
    folder: Path,
    hidden: int,
    projection: tuple[int, int] | None,
    saved_file: Path | None,
    pooling: str,
) -> tuple[Module, ...]:
    """The module chain with each module's width, checked against the recorded settings: a Dense module
    where no projection is recorded (or none where one is), a Pooling or Dense config that disagrees."""
    modules_file = folder / MODULES_FILE
    record = saved_file or folder / ENCODER_CONFIG
    dense = [entry for entry in modules if _kind(entry) == "Dense"]
    if dense and not projection:
        where = (
            f"{record} records no 'projection'"
            if saved_file
            else f"{folder} has no {ENCODER_CONFIG} recording it"
        )
        raise InputError(
            f"{modules_file}: module {dense[0].get('idx')} is a Dense projection ({dense[0].get('path')}/), but "
            f"{where}: decoder2vec would not apply it; save the encoder again"
        )
    if projection and not dense and modules_file.is_file():
        raise InputError(
            f"{record} records a projection ({projection[0]} -> {projection[1]}), but {modules_file} lists no "
            "Dense module; save the encoder again"
        )
    if len(dense) > 1:
        raise InputError(f"{modules_file}: {len(dense)} Dense modules; decoder2vec applies one projection")
    chain, width = [], hidden
    for entry in modules:
        kind = _kind(entry)
        sub = folder / str(entry.get("path") or "") / "config.json"
        if kind == "Pooling" and sub.is_file():
            _check_pooling_config(sub, hidden, pooling if saved_file else None, saved_file)
        if kind == "Dense":
            if sub.is_file():
                _check_dense_config(sub, projection, record)
            width = projection[1]
        chain.append(
            Module(int(entry["idx"]), str(entry["name"]), str(entry["path"]), str(entry["type"]), width)
        )
    return tuple(chain)


def _check_pooling_config(file: Path, hidden: int, pooling: str | None, saved_file: Path | None) -> None:
    config = _read_json(file, InputError)
    dim = config.get("word_embedding_dimension")
    if dim is not None and dim != hidden:
        raise InputError(
            f"{file}: 'word_embedding_dimension' is {dim!r}, but the model's token states are {hidden} wide"
        )
    if pooling is None:
        return
    declared = [mode for mode, key in ST_POOLING_KEYS.items() if config.get(key)]
    if declared and declared != [pooling]:
        raise InputError(
            f"{file}: pools with {', '.join(declared)} ({', '.join(ST_POOLING_KEYS[m] for m in declared)}), but "
            f"{saved_file} says 'pooling' is {pooling!r}; save the encoder again"
        )


def _check_dense_config(file: Path, projection: tuple[int, int], record: Path) -> None:
    config = _read_json(file, InputError)
    for key, value in zip(("in_features", "out_features"), projection, strict=True):
        if config.get(key) is not None and config.get(key) != value:
            raise InputError(
                f"{file}: '{key}' is {config.get(key)!r}, but {record} records projection.{key} {value}; "
                "save the encoder again"
            )


def _check_sentence_bert_config(folder: Path, max_length: int | None, saved_file: Path) -> None:
    file = folder / "sentence_bert_config.json"
    if max_length is None or not file.is_file():
        return
    declared = _read_json(file, InputError).get("max_seq_length")
    if declared is not None and declared != max_length:
        raise InputError(
            f"{file}: 'max_seq_length' is {declared!r}, but {saved_file} says 'max_length' is {max_length}; "
            "save the encoder again"
        )


def _has_calibration(folder: Path, width: int) -> bool:
    """Whether a calibration sample is saved; one of another width than the vectors' fails here (other
    damage is named where the sample is read: encoder_config.read_calibration)."""
    file = folder / CALIBRATION_FILE
    if not file.is_file():
        return False
    shape = _npy_shape(file)
    if shape is not None and len(shape) == 2 and shape[1] != width:
        raise InputError(
            f"{file}: a sample of {shape[1]}-wide embeddings, but the encoder's vectors are {width} wide; "
            "calibrate the encoder again"
        )
    return True


def _npy_shape(file: Path) -> tuple[int, ...] | None:
    """The array shape in a .npy file's header (no data read), or None if the header is unreadable."""
    try:
        with file.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            return tuple(reader(handle)[0])
    except (ValueError, OSError):
        return None


# ------------------------------------------------------------------ a static (model2vec) model
def _read_static(source: str, kind: str, path: str, folder: Path) -> EncoderSpec:
    config = _read_json(folder / "config.json", ModelLoadError, "cannot read the model config")
    width = _static_width(folder) or config.get("hidden_dim")
    if not _positive_int(width):
        raise ModelLoadError(
            f"{folder}: neither {STATIC_WEIGHTS} nor config.json's 'hidden_dim' gives the width"
        )
    modules = _read_modules(folder, STATIC_MODULES) or [
        {"idx": 0, "name": "0", "path": ".", "type": ST_PREFIX + "StaticEmbedding"}
    ]
    meta = _read_json(folder / STATIC_META, InputError) if (folder / STATIC_META).is_file() else {}
    prompts, default_prompt = _read_prompts(folder)
    return EncoderSpec(
        source=source,
        kind=kind,
        path=path,
        folder=str(folder),
        model_type=STATIC_MODEL_TYPE,
        hidden_size=int(width),
        num_layers=None,
        context_length=None,
        pooling="mean",
        max_length=STATIC_MAX_LENGTH,
        append_eos=False,
        bidirectional=False,
        projection=None,
        matryoshka_dimensions=None,
        has_calibration=_has_calibration(folder, int(width)),
        saved=True,
        instruction=meta.get("instruction"),
        prompts=prompts,
        default_prompt_name=default_prompt,
        modules=tuple(
            Module(int(m["idx"]), str(m["name"]), str(m["path"]), str(m["type"]), int(width)) for m in modules
        ),
        config=MappingProxyType(dict(config)),
    )


def _static_width(folder: Path) -> int | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(folder / STATIC_WEIGHTS), framework="numpy") as weights:
            shape = weights.get_slice("embeddings").get_shape()
    except (SafetensorError, OSError, ValueError, KeyError):
        return None  # StaticEncoder names what is wrong with the file when it loads
    return int(shape[1]) if len(shape) == 2 else None


# ------------------------------------------------------------------ files
def _read_modules(folder: Path, known: tuple[str, ...]) -> list[dict] | None:
    """modules.json's entries, each checked to be a module decoder2vec runs; None without the file."""
    file = folder / MODULES_FILE
    if not file.is_file():
        return None
    entries = _read_json(file, InputError, expect=list)
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise InputError(f"{file}: entry {position} must be an object with a 'type', found {entry!r}")
        entry.setdefault("idx", position)
        entry.setdefault("name", str(position))
        entry.setdefault("path", "")
        if not entry["type"].startswith(ST_PREFIX) or _kind(entry) not in known:
            raise ModelLoadError(
                f"{file}: module {entry['idx']} has 'type' {entry['type']!r}, which decoder2vec does not run "
                f"(it runs sentence-transformers' {', '.join(known)})"
            )
    return entries


def _read_prompts(folder: Path) -> tuple[tuple[tuple[str, str], ...], str | None]:
    file = folder / "config_sentence_transformers.json"
    if not file.is_file():
        return (), None
    config = _read_json(file, InputError)
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise InputError(f"{file}: 'prompts' must map names to instruction strings, found {prompts!r}")
    default = config.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise InputError(f"{file}: 'default_prompt_name' {default!r} is not one of its 'prompts'")
    return tuple(sorted(prompts.items())), default


def _read_json(file: Path, error: type[Exception], what: str | None = None, expect: type = dict) -> Any:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(
            f"{what}: {file} is not readable JSON ({exc})" if what else f"{file} is not readable JSON ({exc})"
        ) from None
    if not isinstance(value, expect):
        raise error(
            f"{file} must hold a JSON {expect.__name__.replace('dict', 'object')}, found {type(value).__name__}"
        )
    return value


def _saved(file: Path, name: str, check):
    """``check()``, its ValueError/TypeError re-raised as an InputError naming ``file`` and the field."""
    try:
        return check()
    except (ValueError, TypeError) as exc:
        raise InputError(f"{file}: '{name}': {exc}") from None


def _auto_config(folder: Path) -> dict:
    """The backbone's text config by transformers' AutoConfig (which imports torch): for the rare config
    whose width is named by an attribute map rather than ``hidden_size``."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the model config of {folder}: {exc}") from None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    values = text.to_dict()
    for name in ("hidden_size", "max_position_embeddings", "num_hidden_layers"):
        values.setdefault(name, getattr(text, name, None))
    return values


def _positive_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0


def _kind(entry: dict) -> str:
    return str(entry.get("type", "")).rsplit(".", 1)[-1]
