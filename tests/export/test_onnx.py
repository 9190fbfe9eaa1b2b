"""``export onnx``: the exported graph equals the PyTorch encoder, stays bidirectional, and loads the way
sentence-transformers' ONNX backend loads it (onnxruntime for the graph, then the folder's own Pooling)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from decoder2vec import Encoder
from decoder2vec.cli import app
from decoder2vec.errors import BidirectionalityError, ConfigError, OutputExistsError
from decoder2vec.export.onnx import (
    ONNX_MODEL,
    ONNX_QINT8,
    export_graph,
    export_onnx,
    session,
    verify_onnx_attention,
)

TEXTS = ["the cat sat on the mat", "hi", "interesting things happen in the morning and the evening"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def st_onnx_encode(folder: Path, texts: list[str], file_name: str = ONNX_MODEL) -> np.ndarray:
    """What ``SentenceTransformer(folder, backend="onnx")`` computes: the folder's tokenizer (right padding,
    as saved), ``last_hidden_state`` from onnx/<file_name> in onnxruntime, then sentence-transformers' own
    Pooling module built from 1_Pooling/config.json. (optimum-onnx, which that backend imports, pins
    transformers < 4.58, so the loader itself cannot be installed beside transformers 5.)"""
    from sentence_transformers.models import Pooling
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(texts, padding=True, return_tensors="np")
    sess = session(folder / "onnx" / file_name)
    feeds = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    hidden = sess.run(["last_hidden_state"], feeds)[0]
    pooling = Pooling.load(str(folder / "1_Pooling"))
    features = {
        "token_embeddings": torch.from_numpy(hidden),
        "attention_mask": torch.from_numpy(batch["attention_mask"]),
    }
    return pooling(features)["sentence_embedding"].numpy()


@pytest.fixture(scope="module")
def exported(tiny_byte_llama, tmp_path_factory):
    encoder = Encoder.from_pretrained(str(tiny_byte_llama), max_length=64)
    out = tmp_path_factory.mktemp("onnx") / "export"
    return encoder, export_onnx(encoder, out, quantize=True)


def test_export_writes_the_sentence_transformers_layout(exported):
    _, result = exported
    assert sorted(result.files) == [f"onnx/{ONNX_MODEL}", f"onnx/{ONNX_QINT8}"]
    for name in ("config.json", "modules.json", "1_Pooling/config.json", "tokenizer.json"):
        assert (result.path / name).is_file(), name
    assert json.loads((result.path / "config.json").read_text())["is_causal"] is False


def test_onnx_vectors_equal_pytorch_and_the_sentence_transformers_path(exported):
    encoder, result = exported
    want = encoder.encode(TEXTS)
    # the sentence-transformers reading of the folder (its tokenizer, its Pooling) against our encoder
    got = st_onnx_encode(result.path, TEXTS)
    assert cosines(want, got).min() >= 0.9999
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    assert result.min_cosine >= 0.9999


def test_quantized_graph_runs_and_stays_close(exported):
    encoder, result = exported
    got = st_onnx_encode(result.path, TEXTS, ONNX_QINT8)
    # a random 2-layer model, so only a loose bound: int8 must not be garbage
    assert cosines(encoder.encode(TEXTS), got).min() > 0.9


def test_the_exported_graph_is_bidirectional(exported):
    encoder, result = exported
    check = verify_onnx_attention(session(result.path / "onnx" / ONNX_MODEL), encoder.model.config, True)
    assert min(check.first_token_shift, check.first_token_shift_padded) > 1e-3


def test_the_check_fails_on_a_causal_export(tiny_byte_llama, tmp_path):
    causal = Encoder.from_pretrained(str(tiny_byte_llama), bidirectional=False)
    path = tmp_path / "causal.onnx"
    export_graph(causal.model, path)
    sess = session(path)
    with pytest.raises(BidirectionalityError, match="attends causally"):
        verify_onnx_attention(sess, causal.model.config, True)
    verify_onnx_attention(sess, causal.model.config, False)  # and it is what a causal graph should be


def test_export_refuses_a_projection_and_weighted_mean(tiny_byte_llama, tmp_path):
    encoder = Encoder.from_pretrained(str(tiny_byte_llama), pooling="weighted_mean")
    with pytest.raises(ConfigError, match="weighted_mean"):
        export_onnx(encoder, tmp_path / "a")
    encoder.pooling = "mean"
    encoder.projection = np.eye(encoder.embedding_dim, dtype=np.float32)[:8]
    with pytest.raises(ConfigError, match="projection"):
        export_onnx(encoder, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_refuses_bad_input_before_loading(tiny_byte_llama, tmp_path, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Encoder, "from_pretrained", no_load)
    runner = CliRunner()
    # a folder that is not a saved encoder (a raw decoder: no decoder2vec_config.json)
    result = runner.invoke(app, ["export", "onnx", str(tiny_byte_llama), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "not a saved decoder2vec encoder" in result.output
    # an existing OUT is refused, and what it holds is untouched
    saved = tmp_path / "enc"
    saved.mkdir()
    (saved / "decoder2vec_config.json").write_text("{}")
    (saved / "config.json").write_text("{}")
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["export", "onnx", str(saved), str(out)])
    assert result.exit_code == 1 and "already exists" in result.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(OutputExistsError):
        from decoder2vec.export.onnx import check_export

        check_export(str(saved), out)
