"""The command line (errors without tracebacks) and the atomic cache."""

import json
import multiprocessing
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from decoder2vec import Encoder
from decoder2vec.backbone.cache import publish_folder
from decoder2vec.cli import app
from tests.conftest import SENTENCES

runner = CliRunner()


def test_encode_text_file_to_npy(tiny_llama, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(SENTENCES[:3]) + "\n\n")
    result = runner.invoke(
        app, ["encode", str(source), "--out", str(tmp_path / "e.npy"), "--model", str(tiny_llama)]
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(
        np.load(tmp_path / "e.npy"), Encoder.from_pretrained(tiny_llama).encode(SENTENCES[:3]), atol=1e-6
    )


def test_encode_jsonl_from_stdin_to_jsonl(tiny_llama, tmp_path):
    lines = "\n".join(json.dumps({"id": i, "body": s}) for i, s in enumerate(SENTENCES[:2]))
    out = tmp_path / "e.jsonl"
    result = runner.invoke(
        app,
        ["encode", "-", "-o", str(out), "-m", str(tiny_llama), "--field", "body", "--normalize"],
        input=lines,
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in records] == SENTENCES[:2]
    assert abs(np.linalg.norm(records[0]["embedding"]) - 1) < 1e-5


@pytest.mark.parametrize("precision", ["float32", "ubinary"])
def test_encode_dimensions_and_precision(tiny_llama, tmp_path, precision):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(SENTENCES) + "\n")
    out = tmp_path / "e.npy"
    args = ["encode", str(source), "-o", str(out), "-m", str(tiny_llama), "--dimensions", "16"]
    result = runner.invoke(app, [*args, "--precision", precision, "--normalize"])
    assert result.exit_code == 0, result.output
    expected = Encoder.from_pretrained(tiny_llama).encode(
        SENTENCES, dimensions=16, normalize=True, precision=precision
    )
    got = np.load(out)
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_encode_errors_that_need_the_model(tiny_llama, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("hello\n")
    args = ["encode", str(source), "-o", str(tmp_path / "e.npy"), "-m", str(tiny_llama)]
    result = runner.invoke(app, [*args, "--dimensions", "33"])
    assert result.exit_code == 1 and "dimensions=33 is outside [1, 32]" in result.output
    result = runner.invoke(app, [*args, "--precision", "int8"])
    assert result.exit_code == 1 and "calibrate" in result.output
    assert not (tmp_path / "e.npy").exists()


def test_similarity_and_info(tiny_llama):
    result = runner.invoke(app, ["similarity", "the cat", "the cat", "-m", str(tiny_llama)])
    assert result.exit_code == 0 and abs(float(result.output.strip().splitlines()[-1]) - 1) < 1e-4
    result = runner.invoke(app, ["info", "-m", str(tiny_llama)])
    assert result.exit_code == 0 and "bidirectional (token 0 moved by" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["encode", "{missing}", "-o", "{tmp}/e.npy"], "input file not found"),
        (["encode", "{bad_jsonl}", "-o", "{tmp}/e.npy"], "bad.jsonl:2: no 'text' field"),
        (["encode", "{texts}", "-o", "{tmp}/e.csv"], "must end in .npy or .jsonl"),
        (["info", "-m", "{tmp}"], "is not a model folder: it has no config.json"),
        (["import-gguf", "{texts}", "{tmp}/out"], "is not a GGUF file"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(tiny_llama, tmp_path, args, message):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"other": 1}\n')
    (tmp_path / "texts.txt").write_text("hello\n")
    values = {
        "missing": tmp_path / "nope.txt",
        "bad_jsonl": tmp_path / "bad.jsonl",
        "texts": tmp_path / "texts.txt",
        "tmp": tmp_path,
    }
    args = [a.format(**values) for a in args] + (["-m", str(tiny_llama)] if args[0] == "encode" else [])
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def _slow_build(target: str, tag: str) -> str:
    def build(tmp):
        (tmp / "part1").write_text(tag)
        time.sleep(0.3)  # widen the race window
        (tmp / "part2").write_text(tag)

    return str(publish_folder(__import__("pathlib").Path(target), build))


def test_concurrent_first_use_publishes_one_complete_folder(tmp_path):
    target = tmp_path / "cache" / "model"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_slow_build, [(str(target), f"writer{i}") for i in range(4)])
    assert set(results) == {str(target)}
    tags = {(target / "part1").read_text(), (target / "part2").read_text()}
    assert len(tags) == 1  # both parts come from the same writer
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # losers cleaned up
