"""Issue #22, items 4 and 5: the exported GGUF gets the umask's mode (not a forced 0644), and `export gguf`
replaces neither an existing file without --overwrite nor its own input model file."""

import os
import stat

import pytest
from typer.testing import CliRunner

from decoder2vec import Encoder
from decoder2vec.cli import app
from decoder2vec.export.gguf import export_gguf

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DECODER2VEC_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)], ids=["umask022", "umask077"])
def test_exported_file_follows_the_umask(byte_level_factory, tmp_path, umask, mode):
    encoder = Encoder.from_pretrained(byte_level_factory("llama"))
    old = os.umask(umask)
    try:
        path = export_gguf(encoder, tmp_path / "e.gguf", outtype="f32").path
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_cli_refuses_an_existing_file_and_its_own_input(byte_level_factory, tmp_path):
    model = str(byte_level_factory("llama"))
    mine = tmp_path / "mine.gguf"
    mine.write_bytes(b"precious")
    # before the model loads: the model does not exist
    result = runner.invoke(app, ["export", "gguf", "-m", str(tmp_path / "nope"), "-o", str(mine)])
    assert result.exit_code == 1 and f"--out {mine} already exists; pass --overwrite" in result.output
    assert mine.read_bytes() == b"precious"
    result = runner.invoke(app, ["export", "gguf", "-m", model, "-o", str(mine), "--overwrite"])
    assert result.exit_code == 0, result.output
    exported = mine.read_bytes()
    assert exported.startswith(b"GGUF")
    # a GGUF model exported onto itself would be destroyed while being read: never, even with --overwrite
    result = runner.invoke(app, ["export", "gguf", "-m", str(mine), "-o", str(mine), "--overwrite"])
    assert result.exit_code == 1 and "is the input" in result.output, result.output
    assert mine.read_bytes() == exported
