"""Issue #22, item 7: a damaged GGUF and an --out that is a file are one clear line, before any work."""

import re

import pytest
from typer.testing import CliRunner

from decoder2vec import Encoder
from decoder2vec.cli import app
from decoder2vec.errors import ModelLoadError

runner = CliRunner()


@pytest.fixture()
def exported(tiny_model_factory, tmp_path, monkeypatch):
    """A GGUF written by the exporter (a GPT-2-style tokenizer, so it can be exported) and a private cache."""
    from decoder2vec.export.gguf import export_gguf

    monkeypatch.setenv("DECODER2VEC_HOME", str(tmp_path / "cache"))
    model = tiny_model_factory("llama", add_bos=False, tokenizer="gpt2")
    return export_gguf(Encoder.from_pretrained(model), tmp_path / "e.gguf", outtype="f32").path


@pytest.mark.parametrize("keep", [0.5, 0.99, 200], ids=["half", "last-bytes-missing", "header-only"])
def test_truncated_gguf_is_named_as_truncated(exported, tmp_path, keep):
    from decoder2vec.backbone.gguf_import import import_gguf

    data = exported.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    for load in (lambda: import_gguf(bad, tmp_path / "out"), lambda: Encoder.from_pretrained(bad)):
        with pytest.raises(
            ModelLoadError, match=rf"GGUF file {re.escape(str(bad))} is truncated or corrupt"
        ) as failed:
            load()
        assert "\n" not in str(failed.value)
    assert not (tmp_path / "out").exists()


def test_import_gguf_onto_a_file_is_one_clear_line(exported, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["import-gguf", str(exported), str(tmp_path / "notes.txt")])
    assert result.exit_code == 1, result.output
    assert f"error: output folder {tmp_path / 'notes.txt'} is a file" in result.output
    assert "Errno" not in result.output and "Traceback" not in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
