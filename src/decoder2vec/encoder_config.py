"""An encoder's settings and the files that record them, in one low module.

Pooling, token limit, attention mode, Matryoshka dimensions and the output options (``dimensions``,
``precision``) are checked here, and a saved encoder's files are read and written here, so backbone,
encoding, export, serving and corpus agree on them without importing each other; what an encoder's
settings resolve to (saved values, defaults, widths, the module chain) is :mod:`decoder2vec.spec`'s, built on
these readers. It needs only numpy and the standard library: no torch, no model code.

A saved encoder folder holds, besides the HF model files::

    decoder2vec_config.json            our settings (pooling, max_length, append_eos, bidirectional,
                                       matryoshka_dimensions, projection)
    decoder2vec_calibration.npy        raw pooled embeddings of a text sample (int8 ranges), optional
    modules.json, sentence_bert_config.json, config_sentence_transformers.json, 1_Pooling/config.json
                                       sentence-transformers' stock Transformer -> Pooling modules
    2_Dense/config.json, 2_Dense/model.safetensors
                                       an output projection after pooling (a distilled student's map into
                                       its teacher's space), as sentence-transformers' stock Dense module
    config.json                        + "matryoshka_dimensions" (the field vLLM reads)
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from decoder2vec.errors import ConfigError, InputError
from decoder2vec.io import write_file_atomic

ENCODER_CONFIG = "decoder2vec_config.json"
CALIBRATION_FILE = "decoder2vec_calibration.npy"
# The projection's weights live once, where sentence-transformers' Dense module reads them.
PROJECTION_FOLDER = "2_Dense"
PROJECTION_WEIGHTS = "model.safetensors"
PROJECTION_KEY = "linear.weight"  # (out_features, in_features), as nn.Linear stores it
POOLING_MODES = ("mean", "weighted_mean", "last_token", "bos")
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
DEFAULT_MAX_LENGTH = 512
# max_length None: DEFAULT_MAX_LENGTH, capped at the model's context (see default_max_length)
DEFAULTS = {
    "pooling": "mean",
    "max_length": None,
    "append_eos": False,
    "bidirectional": True,
    "matryoshka_dimensions": None,
    "projection": None,  # {"in_features": pooled width, "out_features": embedding width} when there is one
}


# ------------------------------------------------------------------ checks
def check_pooling_mode(mode: str) -> str:
    if mode not in POOLING_MODES:
        raise ValueError(f"unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}")
    return mode


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def check_dimensions(dimensions, width: int) -> int | None:
    """``dimensions`` as an int in ``[1, width]``, or None (the full width)."""
    if dimensions is None:
        return None
    if isinstance(dimensions, bool) or not isinstance(dimensions, int | np.integer):
        raise TypeError(f"dimensions must be a positive integer, got {dimensions!r}")
    if not 1 <= dimensions <= width:
        raise ValueError(
            f"dimensions={dimensions} is outside [1, {width}], the embedding width of this model"
        )
    return int(dimensions)


def check_matryoshka_dimensions(dims, width: int) -> list[int] | None:
    """Distinct positive ints up to ``width``, largest first; None or empty: none declared."""
    if not dims:
        return None
    if not isinstance(dims, list | tuple) or any(
        isinstance(d, bool) or not isinstance(d, int | np.integer) for d in dims
    ):
        raise ConfigError(f"matryoshka dimensions must be a list of integers, got {dims!r}")
    bad = [int(d) for d in dims if not 1 <= d <= width]
    if bad or len(set(dims)) != len(dims):
        raise ConfigError(
            f"matryoshka dimensions {list(dims)} must be distinct integers in [1, {width}] (the model's width)"
        )
    return sorted((int(d) for d in dims), reverse=True)


def output_shape(width: int, dimensions: int | None, precision: str) -> tuple[int, np.dtype]:
    """Columns and dtype of ``encode(dimensions=, precision=)``'s rows (binary packs 8 dims a byte)."""
    cols = dimensions or width
    dtype = {
        "float32": np.float32,
        "int8": np.int8,
        "uint8": np.uint8,
        "binary": np.int8,
        "ubinary": np.uint8,
    }
    if precision in ("binary", "ubinary"):
        cols = (cols + 7) // 8
    return cols, np.dtype(dtype[check_precision(precision)])


# ------------------------------------------------------------------ the model's own limits
def model_context(config) -> int | None:
    """The longest sequence the model was built for (``max_position_embeddings``), if it says."""
    return getattr(config, "max_position_embeddings", None)


def default_max_length(config) -> int:
    """The token limit an encoder gets when none is set: 512, or the model's context if shorter."""
    return min(DEFAULT_MAX_LENGTH, model_context(config) or DEFAULT_MAX_LENGTH)


# ------------------------------------------------------------------ reading a saved encoder
def read_encoder_config(path: str | Path) -> dict:
    """The settings a saved encoder folder records (``decoder2vec_config.json``), or ``{}``."""
    file = Path(path) / ENCODER_CONFIG
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{file} is not valid JSON ({exc}); delete the folder and save or convert it again"
        ) from exc


def read_calibration(path: str | Path) -> np.ndarray | None:
    """The calibration sample a saved encoder holds, or None."""
    file = Path(path) / CALIBRATION_FILE
    if not file.is_file():
        return None
    try:
        sample = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{file} is not a readable .npy array ({exc}); save the encoder again") from exc
    if sample.ndim != 2 or not np.issubdtype(sample.dtype, np.floating):
        raise InputError(f"{file} must hold a 2-D float array, got {sample.dtype} {sample.shape}")
    bad = np.flatnonzero(~np.isfinite(sample).all(axis=1))
    if bad.size:  # NaN ranges would quantize every int8 output to zeros
        raise InputError(
            f"{file}: row {int(bad[0])} holds NaN or infinite values; calibrate the encoder again"
        )
    return sample.astype(np.float32)


def projection_file(path: str | Path, saved: dict) -> Path | None:
    """Where the projection weights of a saved encoder whose settings are ``saved`` lie, checked to exist;
    None when it records no projection."""
    if not saved.get("projection"):
        return None
    file = Path(path) / PROJECTION_FOLDER / PROJECTION_WEIGHTS
    if not file.is_file():
        raise InputError(f"{Path(path) / ENCODER_CONFIG} records a projection but {file} is missing")
    return file


def read_projection(path: str | Path, saved: dict | None = None) -> np.ndarray | None:
    """The output projection a saved encoder holds ((out, in) float32), or None; checked against the shape
    its ``decoder2vec_config.json`` records, so a damaged folder fails before any weights load."""
    saved = read_encoder_config(path) if saved is None else saved
    file = projection_file(path, saved)
    if file is None:
        return None
    shape = saved["projection"]
    return read_projection_file(file, (int(shape["out_features"]), int(shape["in_features"])))


def read_projection_file(
    file: Path, shape: tuple[int, int] | None = None, remedy: str = "save the encoder again"
) -> np.ndarray:
    """The (out, in) float32 matrix of a projection weights file (sentence-transformers' Dense key), checked
    to be ``shape`` when given, else 2-D; errors name the file and ``remedy``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        weight = load_file(str(file)).get(PROJECTION_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{file} is not a readable safetensors file ({exc}); {remedy}") from exc
    _check_projection_shape(file, None if weight is None else weight.shape, shape, remedy)
    return weight.astype(np.float32)


def check_projection_header(
    file: Path, shape: tuple[int, int], remedy: str = "save the encoder again"
) -> None:
    """The projection weights file holds an ``shape`` (out, in) matrix, read from its header alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="numpy") as weights:
            names = weights.keys()
            found = tuple(weights.get_slice(PROJECTION_KEY).get_shape()) if PROJECTION_KEY in names else None
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{file} is not a readable safetensors file ({exc}); {remedy}") from exc
    _check_projection_shape(file, found, shape, remedy)


def _check_projection_shape(
    file: Path, found: tuple | None, shape: tuple[int, int] | None, remedy: str
) -> None:
    if found is None or len(found) != 2 or (shape is not None and tuple(found) != shape):
        got = "no tensor" if found is None else f"shape {tuple(found)}"
        want = f"a {shape} matrix" if shape is not None else "a 2-D matrix"
        raise InputError(f"{file}: '{PROJECTION_KEY}' must be {want}, found {got}; {remedy}")


# ------------------------------------------------------------------ writing one
# Our pooling names -> sentence-transformers' boolean keys. ST's "cls" takes the first real token,
# which is what our "bos" mode does.
ST_POOLING_KEYS = {
    "mean": "pooling_mode_mean_tokens",
    "weighted_mean": "pooling_mode_weightedmean_tokens",
    "last_token": "pooling_mode_lasttoken",
    "bos": "pooling_mode_cls_token",
}
_ST_ALL_KEYS = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
# decoder2vec pooling <-> llama.cpp's enum llama_pooling_type (GGUF ``{arch}.pooling_type``). CLS takes a
# sequence's first token, which is what "bos" pools (the BOS token when the tokenizer adds one).
GGUF_POOLING_TYPES = {"mean": 1, "bos": 2, "last_token": 3}
GGUF_POOLING_NAMES = {value: key for key, value in GGUF_POOLING_TYPES.items()}
ENCODER_FILES = (
    ENCODER_CONFIG,
    CALIBRATION_FILE,
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling",
    PROJECTION_FOLDER,
)


def is_encoder_file(name: str) -> bool:
    """Files a previous save may have left that a new one might not rewrite (weight shards, the
    calibration sample of an encoder that no longer has one): replaced or removed on overwrite."""
    weights = name.startswith("model") and name.endswith((".safetensors", ".safetensors.index.json"))
    return weights or name in ENCODER_FILES


def write_encoder_files(
    folder: Path,
    settings: dict,
    embedding_dim: int,
    calibration: np.ndarray | None = None,
    projection: np.ndarray | None = None,
) -> None:
    """Write our settings, the calibration sample, the projection and the sentence-transformers files into
    ``folder`` (which already holds the HF model), and add ``matryoshka_dimensions`` to its config.json.

    ``SentenceTransformer(folder)`` then loads it with its stock modules, no ``trust_remote_code``:
    bidirectionality travels in config.json (``is_causal: false``), the pooling mode in 1_Pooling/, the
    projection (an (out, in) matrix applied after pooling, ``embedding_dim`` = out) in 2_Dense/.
    """
    folder = Path(folder)
    settings = {key: settings.get(key, DEFAULTS[key]) for key in DEFAULTS}
    pooled_dim = embedding_dim
    if projection is not None:
        projection = np.ascontiguousarray(projection, dtype=np.float32)
        if projection.ndim != 2 or projection.shape[0] != embedding_dim:
            raise ValueError(f"a projection must be an ({embedding_dim}, in) matrix, got {projection.shape}")
        pooled_dim = int(projection.shape[1])
        settings["projection"] = {"in_features": pooled_dim, "out_features": embedding_dim}
    else:
        settings["projection"] = None
    _dump(folder / ENCODER_CONFIG, settings)
    if calibration is not None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(calibration, dtype=np.float32), allow_pickle=False)
        write_file_atomic(folder / CALIBRATION_FILE, buffer.getvalue())
    dims = settings["matryoshka_dimensions"]
    config_file = folder / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        if dims:
            config["matryoshka_dimensions"] = dims
        else:
            config.pop("matryoshka_dimensions", None)
        _dump(config_file, config)

    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    pooling_config = {"word_embedding_dimension": pooled_dim, **{key: False for key in _ST_ALL_KEYS}}
    pooling_config[ST_POOLING_KEYS[settings["pooling"]]] = True
    # Instructions (ST "prompts") are attended to but not pooled, as in decoder2vec.
    pooling_config["include_prompt"] = False
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    if projection is not None:
        from safetensors.numpy import save

        # sentence-transformers' Dense: linear, no bias, identity activation (a plain matrix, as ours)
        dense = {
            "in_features": pooled_dim,
            "out_features": embedding_dim,
            "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
        }
        (folder / PROJECTION_FOLDER).mkdir(parents=True, exist_ok=True)
        _dump(folder / PROJECTION_FOLDER / "config.json", dense)
        write_file_atomic(folder / PROJECTION_FOLDER / PROJECTION_WEIGHTS, save({PROJECTION_KEY: projection}))
        modules.append(
            {"idx": 2, "name": "2", "path": PROJECTION_FOLDER, "type": "sentence_transformers.models.Dense"}
        )
    _dump(folder / "modules.json", modules)
    _dump(
        folder / "sentence_bert_config.json",
        {"max_seq_length": settings["max_length"], "do_lower_case": False},
    )
    st_config = {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    if dims:
        # Not read by sentence-transformers itself (it takes truncate_dim= at load); recorded for people
        # and tools that look, as model cards do.
        st_config["matryoshka_dimensions"] = dims
    _dump(folder / "config_sentence_transformers.json", st_config)
    _dump(folder / "1_Pooling" / "config.json", pooling_config)


def _dump(path: Path, value) -> None:
    write_file_atomic(path, (json.dumps(value, indent=2) + "\n").encode())
