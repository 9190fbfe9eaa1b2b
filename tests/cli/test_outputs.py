"""Issue #22, items 5 and 7a: an output file is never replaced silently, an input never at all, and an
--out that cannot be what the command writes is one clear line; all before a model loads."""

import os

import numpy as np
import pytest
from typer.testing import CliRunner

from decoder2vec.cli import app

runner = CliRunner()


def encode(source, out, model, *extra):
    return runner.invoke(app, ["encode", str(source), "-o", str(out), "-m", str(model), *extra])


def test_encode_refuses_an_existing_output_unless_told(tiny_llama, tmp_path):
    source, out = tmp_path / "t.txt", tmp_path / "mine.npy"
    source.write_text("hello\n")
    out.write_bytes(b"precious")
    # checked before the model loads: the model does not exist
    result = encode(source, out, tmp_path / "no-such-model")
    assert result.exit_code == 1 and f"--out {out} already exists; pass --overwrite" in result.output
    assert out.read_bytes() == b"precious"
    result = encode(source, out, tiny_llama, "--overwrite")
    assert result.exit_code == 0, result.output
    assert np.load(out).shape[0] == 1


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_encode_never_writes_over_its_input(tmp_path, link):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "hello"}\n')
    out = {"same": source, "symlink": tmp_path / "alias.jsonl", "hardlink": tmp_path / "copy.jsonl"}[link]
    if link == "symlink":
        out.symlink_to(source)
    elif link == "hardlink":
        os.link(source, out)
    result = encode(source, out, tmp_path / "no-such-model", "--overwrite")  # not even with --overwrite
    assert result.exit_code == 1 and "is the input" in result.output, result.output
    assert source.read_text() == '{"text": "hello"}\n'


def test_convert_out_onto_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(
        app, ["convert", "--out", str(tmp_path / "notes.txt"), "--model", str(tmp_path / "nope")]
    )
    assert result.exit_code == 1, result.output
    assert (
        f"error: --out {tmp_path / 'notes.txt'} is a file" in result.output and "Errno" not in result.output
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"
