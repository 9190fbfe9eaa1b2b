"""Round trip: an exported GGUF loads back (via transformers' GGUF reader) as the same encoder."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from decoder2vec import Encoder
from decoder2vec.backbone.gguf_import import cached_gguf_folder, import_gguf, read_encoder_settings
from decoder2vec.cli import app
from decoder2vec.export.gguf import export_gguf

TEXTS = ["the cat sat on the mat", "a quick brown fox jumps over the lazy dog", "hi"]
runner = CliRunner()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DECODER2VEC_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_exported_encoder_round_trips(byte_level_factory, tmp_path, family):
    original = Encoder.from_pretrained(byte_level_factory(family), pooling="last_token")
    path = export_gguf(original, tmp_path / "e.gguf", outtype="f32").path
    assert read_encoder_settings(path) == {"bidirectional": True, "pooling": "last_token"}
    loaded = Encoder.from_pretrained(path)
    assert loaded.bidirectional and loaded.pooling == "last_token"
    a, b = original.encode(TEXTS), loaded.encode(TEXTS)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.9999, cos


def test_import_records_settings_and_plain_gguf_records_none(byte_level_factory, tmp_path):
    encoder = Encoder.from_pretrained(byte_level_factory("llama"))
    path = export_gguf(encoder, tmp_path / "e.gguf", outtype="f16", pooling="bos").path
    folder = import_gguf(path, tmp_path / "imported")
    assert json.loads((folder / "decoder2vec_config.json").read_text()) == {
        "bidirectional": True,
        "pooling": "bos",
    }
    plain = tmp_path / "plain.gguf"  # an ordinary LLM's GGUF, without the two keys, says nothing
    import gguf

    writer = gguf.GGUFWriter(plain, "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    assert read_encoder_settings(plain) == {}


def test_cache_key_changes_when_the_file_is_replaced(byte_level_factory, tmp_path):
    encoder = Encoder.from_pretrained(byte_level_factory("llama"))
    path = export_gguf(encoder, tmp_path / "e.gguf", outtype="f32").path
    first = cached_gguf_folder(path)
    stat = path.stat()
    export_gguf(encoder, path, outtype="f32", pooling="last_token")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime; only the inode differs
    assert cached_gguf_folder(path) != first


def test_cli_exports_and_reports_errors(byte_level_factory, tiny_model_factory, tmp_path):
    model = str(byte_level_factory("llama"))
    out = tmp_path / "cli.gguf"
    result = runner.invoke(app, ["export", "gguf", "--model", model, "--out", str(out), "--outtype", "q8_0"])
    assert result.exit_code == 0, result.output
    assert "q8_0" in result.output and "bidirectional" in result.output and out.is_file()
    result = runner.invoke(
        app, ["export", "gguf", "-m", model, "-o", str(tmp_path / "w.gguf"), "--pooling", "weighted_mean"]
    )
    assert result.exit_code == 1 and "error: pooling 'weighted_mean'" in result.output
    result = runner.invoke(app, ["export", "gguf", "-m", "no/such/model/x", "-o", str(tmp_path / "x.txt")])
    assert result.exit_code == 1 and "must end in .gguf" in result.output  # checked before loading
    gemma = str(tiny_model_factory("gemma", "eager"))
    result = runner.invoke(app, ["export", "gguf", "-m", gemma, "-o", str(tmp_path / "g.gguf")])
    assert result.exit_code == 1 and "'gemma'" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".gguf") == ["cli.gguf"]


def test_cli_refuses_what_the_config_decides_before_loading_weights(
    byte_level_factory, tiny_model_factory, tmp_path, monkeypatch
):
    saved = tmp_path / "weighted"
    Encoder.from_pretrained(byte_level_factory("llama"), pooling="weighted_mean").save(saved)

    def no_load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the refusal")

    monkeypatch.setattr(Encoder, "from_pretrained", no_load)
    gemma = str(tiny_model_factory("gemma", "eager"))
    for model, message in [(gemma, "architecture 'gemma'"), (str(saved), "pooling 'weighted_mean'")]:
        result = runner.invoke(app, ["export", "gguf", "-m", model, "-o", str(tmp_path / "m.gguf")])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "m.gguf").exists()
