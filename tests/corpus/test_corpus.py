"""``decoder2vec embed-corpus``: local and Ray engines, exact resumption after SIGKILL, refusals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from decoder2vec import Encoder
from decoder2vec.cli import app
from decoder2vec.corpus import embed_corpus_files, read_shards
from decoder2vec.corpus.progress import HANG_AFTER_SHARDS_ENV
from decoder2vec.corpus.ray_engine import ShardGatherer, import_ray
from decoder2vec.errors import Decoder2VecError
from tests.conftest import SENTENCES

runner = CliRunner()
SHARD_SIZE = 64
WORDS = " ".join(SENTENCES).split()


def make_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 14)))) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Three formats, 300 texts: JSONL with ids, Parquet with ids, a text file (ids file:line)."""
    folder = tmp_path_factory.mktemp("corpus")
    jsonl, parquet, lines = make_texts(150, 0), make_texts(100, 1), make_texts(50, 2)
    (folder / "a.jsonl").write_text(
        "".join(json.dumps({"id": f"a{i}", "text": t}) + "\n" for i, t in enumerate(jsonl))
    )
    pq.write_table(
        pa.table({"id": [f"b{i}" for i in range(len(parquet))], "text": parquet}), folder / "b.parquet"
    )
    (folder / "c.txt").write_text("\n".join(lines) + "\n")
    ids = [f"a{i}" for i in range(150)] + [f"b{i}" for i in range(100)]
    ids += [f"{folder / 'c.txt'}:{i + 1}" for i in range(50)]
    return {
        "folder": folder,
        "inputs": [str(folder / "*.jsonl"), str(folder / "b.parquet"), str(folder / "c.txt")],
        "ids": ids,
        "texts": jsonl + parquet + lines,
    }


@pytest.fixture(scope="module")
def reference(corpus, tiny_llama, tmp_path_factory) -> Path:
    """An uninterrupted local run, through the command line."""
    out = tmp_path_factory.mktemp("reference") / "out"
    result = runner.invoke(
        app,
        [
            "embed-corpus",
            *corpus["inputs"],
            "--out",
            str(out),
            "-m",
            str(tiny_llama),
            "--shard-size",
            str(SHARD_SIZE),
            "--batch-size",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 300 embeddings of dimension 32 in 5 shards" in result.output
    return out


def snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_local_engine_rows_equal_encoder_encode(corpus, reference, tiny_llama):
    ids, embeddings = read_shards(reference)
    assert ids == corpus["ids"] and len(set(ids)) == 300
    encoder = Encoder.from_pretrained(tiny_llama)
    expected = encoder.encode(corpus["texts"], batch_size=32)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    schema = pq.read_schema(reference / "data" / "part-00000.parquet")
    assert schema.field("id").type == pa.string()
    assert schema.field("embedding").type == pa.list_(pa.float32(), 32)
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == 300 and manifest["shards"] == 5
    from decoder2vec.corpus.model_info import model_fingerprint

    assert manifest["settings"] | {"model": None} == {
        "model": None,
        "model_fingerprint": model_fingerprint(str(tiny_llama)),
        "instruction": None,
        "normalize": False,
        "dimensions": None,
        "precision": "float32",
        "field": "text",
        "id_field": "id",
        "shard_size": SHARD_SIZE,
        "pooling": "mean",
        "dimension": 32,
        "max_length": encoder.max_length,
    }
    assert [f["records"] for f in manifest["inputs"]] == [150, 100, 50]


def test_sigkill_after_first_shard_then_rerun_equals_uninterrupted(corpus, reference, tiny_llama, tmp_path):
    out = tmp_path / "out"
    args = [
        "embed-corpus",
        *corpus["inputs"],
        "--out",
        str(out),
        "-m",
        str(tiny_llama),
        "--shard-size",
        str(SHARD_SIZE),
    ]
    # The hook makes the process sleep once its first shard is written, so the SIGKILL lands at a known point.
    env = {**os.environ, HANG_AFTER_SHARDS_ENV: "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "decoder2vec.cli", *args], env=env, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "done" / "part-00000.json").exists():  # the shard's finish record
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no shard appeared"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert files(out) == ["data/part-00000.parquet", "done/part-00000.json", "manifest.json"]
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    (out / "data" / ".part-00001.parquet.x1y2z3").write_bytes(b"half a shard")  # a kill during a write

    result = runner.invoke(app, [*args, "--batch-size", "8"])  # how to run may change; what to compute not
    assert result.exit_code == 0, result.output
    assert "(1 already done)" in result.output
    assert files(out) == files(reference)
    ids, embeddings = read_shards(out)
    ref_ids, ref_embeddings = read_shards(reference)
    assert ids == ref_ids and len(set(ids)) == len(ids) == 300
    np.testing.assert_allclose(embeddings, ref_embeddings, atol=1e-5)
    assert json.loads((out / "manifest.json").read_text())["complete"]


def corpus_args(corpus, out: Path, model: Path, *extra: str) -> list[str]:
    args = ["embed-corpus", *corpus["inputs"], "--out", str(out), "-m", str(model)]
    return [*args, "--shard-size", str(SHARD_SIZE), *extra]


def test_a_damaged_shard_is_embedded_again_never_trusted(corpus, reference, tiny_llama, tmp_path):
    """A finished shard counts only if it still matches the size and sha256 recorded when it was written."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    torn = out / "data" / "part-00001.parquet"
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])  # as a crash of a copy or disk leaves
    edited = out / "data" / "part-00003.parquet"
    data = bytearray(edited.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    edited.write_bytes(bytes(data))
    (out / "done" / "part-00004.json").unlink()  # a kill between writing a shard and its record
    result = runner.invoke(app, corpus_args(corpus, out, tiny_llama))
    assert result.exit_code == 0, result.output
    assert "(2 already done)" in result.output
    assert "data/part-00001.parquet is " in result.stderr and "truncated" in result.stderr
    assert "data/part-00003.parquet does not match the sha256" in result.stderr
    assert "data/part-00004.parquet has no record of being finished" in result.stderr
    assert result.stderr.count("embedding it again") == 3
    ids, embeddings = read_shards(out)
    ref_ids, ref_embeddings = read_shards(reference)
    assert ids == ref_ids
    np.testing.assert_allclose(embeddings, ref_embeddings, atol=1e-5)
    assert files(out) == files(reference) and json.loads((out / "manifest.json").read_text())["complete"]
    again = runner.invoke(app, corpus_args(corpus, out, tiny_llama))
    assert again.exit_code == 0 and "(5 already done)" in again.output and "warning" not in again.output


def test_output_reads_with_pyarrow_and_pandas_and_read_shards_ignores_strays(
    corpus, reference, tiny_llama, tmp_path
):
    import shutil

    table = pq.read_table(reference / "data")  # the documented read: manifest and records live outside
    assert table.column("id").to_pylist() == corpus["ids"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    pandas = pytest.importorskip("pandas")
    assert pandas.read_parquet(reference / "data")["id"].tolist() == corpus["ids"]

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    shutil.copy(out / "data" / "part-00000.parquet", out / "data" / "part-00000 (copy).parquet")
    shutil.copy(out / "data" / "part-00001.parquet", out / "data" / "part-00099.parquet")
    shutil.copy(out / "data" / "part-00002.parquet", out / "part-00002.parquet")
    ids, embeddings = read_shards(out)  # only the manifest's shards: no duplicate ids
    assert ids == corpus["ids"] and len(embeddings) == 300
    result = runner.invoke(app, corpus_args(corpus, out, tiny_llama))
    assert result.exit_code == 0 and "(5 already done)" in result.output
    assert (out / "data" / "part-00099.parquet").is_file()  # not ours to delete
    (out / "data" / "part-00003.parquet").unlink()
    with pytest.raises(Decoder2VecError, match=r"not complete: 1 of 5 shards are missing .*re-run"):
        read_shards(out)


def test_a_folder_in_the_layout_before_data_is_resumed(corpus, reference, tiny_llama, tmp_path):
    """Shards beside manifest.json (decoder2vec-corpus/1) are moved into data/, checked, and resumed."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    for path in (out / "data").iterdir():
        path.rename(out / path.name)
    shutil.rmtree(out / "data")
    shutil.rmtree(out / "done")
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("dimensions", "precision"):
        del manifest["settings"][key]
    (out / "manifest.json").write_text(
        json.dumps({**manifest, "format": "decoder2vec-corpus/1", "complete": False})
    )
    (out / "part-00004.parquet").unlink()  # the old run was interrupted ...
    torn = out / "part-00002.parquet"
    torn.write_bytes(torn.read_bytes()[:100])  # ... and left a shard it would have trusted
    (out / "notes.md").write_text("mine")
    result = runner.invoke(app, corpus_args(corpus, out, tiny_llama))
    assert result.exit_code == 0, result.output
    assert "moved 4 shard(s)" in result.stderr and "(3 already done)" in result.output
    assert "data/part-00002.parquet has no record" in result.stderr
    ids, embeddings = read_shards(out)
    ref_ids, ref_embeddings = read_shards(reference)
    assert ids == ref_ids
    np.testing.assert_allclose(embeddings, ref_embeddings, atol=1e-5)
    assert files(out) == sorted([*files(reference), "notes.md"])
    assert json.loads((out / "manifest.json").read_text())["format"] == "decoder2vec-corpus/2"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--normalize"], "normalize False (now True)"),
        (["--instruction", "Query: "], "instruction None (now 'Query: ')"),
        (["--shard-size", "10"], "shard_size 64 (now 10)"),
        (["--pooling", "last_token"], "pooling 'mean' (now 'last_token')"),
        (["--dimensions", "16"], "dimensions None (now 16)"),
        (["--precision", "binary"], "precision 'float32' (now 'binary')"),
        (["--model", "{other}"], "model '"),
        (["--drop-input"], "input {c} is missing"),
    ],
)
def test_other_settings_in_existing_folder_are_refused_untouched(
    corpus, reference, tiny_llama, tiny_model_factory, extra, message
):
    values = {"other": tiny_model_factory("qwen2"), "c": corpus["folder"] / "c.txt"}
    inputs = corpus["inputs"][:2] if extra == ["--drop-input"] else corpus["inputs"]
    extra = [] if extra == ["--drop-input"] else [e.format(**values) for e in extra]
    before = snapshot(reference)
    args = [
        "embed-corpus",
        *inputs,
        "--out",
        str(reference),
        "-m",
        str(tiny_llama),
        "--shard-size",
        str(SHARD_SIZE),
    ]
    result = runner.invoke(app, args + extra)
    assert result.exit_code == 1
    assert "holds embeddings made with other settings" in result.output
    assert message.format(**values) in result.output
    assert snapshot(reference) == before


COMPACT_CASES = [
    (None, "binary", pa.int8(), 4),
    (12, "ubinary", pa.uint8(), 2),
    (16, "int8", pa.int8(), 16),
    (16, "uint8", pa.uint8(), 16),
    (8, "float32", pa.float32(), 8),
]


@pytest.mark.parametrize(("dimensions", "precision", "value_type", "width"), COMPACT_CASES)
def test_compact_shards_hold_what_encode_gives(
    corpus, tiny_llama, tmp_path, dimensions, precision, value_type, width
):
    """--dimensions/--precision: the column's type and width, read_shards' dtype, and the values of
    ``Encoder.encode`` with the same options (int8/uint8 calibrated on the corpus, as ``calibrate`` does)."""
    texts = corpus["texts"][250:]  # c.txt: 50 texts
    out = tmp_path / "out"
    options = ["--normalize", "--precision", precision]
    options += [] if dimensions is None else ["--dimensions", str(dimensions)]
    args = ["embed-corpus", str(corpus["folder"] / "c.txt"), "-o", str(out), "-m", str(tiny_llama)]
    result = runner.invoke(app, [*args, "--shard-size", "16", *options])
    assert result.exit_code == 0, result.output
    stored = "" if precision == "float32" else f" as {precision} ({width} "
    assert f"wrote 50 embeddings of dimension {dimensions or 32}{stored}" in result.output
    assert pq.read_schema(out / "data" / "part-00000.parquet").field("embedding").type == pa.list_(
        value_type, width
    )
    ids, embeddings = read_shards(out)
    assert ids == corpus["ids"][250:]
    assert embeddings.dtype == value_type.to_pandas_dtype() and embeddings.shape == (50, width)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["dimensions"] == dimensions and manifest["settings"]["precision"] == precision
    encoder = Encoder.from_pretrained(tiny_llama)
    if precision in ("int8", "uint8"):
        assert "calibration" in manifest and len(manifest["calibration"]["ranges"][0]) == dimensions
        encoder.calibrate(texts)  # the same 50 texts the run calibrated on (all of them)
    else:
        assert "calibration" not in manifest
    expected = np.concatenate(
        [
            encoder.encode(texts[k : k + 16], normalize=True, dimensions=dimensions, precision=precision)
            for k in range(0, 50, 16)
        ]
    )
    assert expected.dtype == embeddings.dtype
    np.testing.assert_array_equal(embeddings, expected)


def test_compact_settings_are_checked_before_a_model_loads_and_kept_on_resume(tiny_llama, tmp_path):
    source = tmp_path / "t.txt"
    source.write_text("one text\nanother text\nand a third\n")
    out = tmp_path / "out"
    args = ["embed-corpus", str(source), "-o", str(out), "--shard-size", "2"]
    result = runner.invoke(app, [*args, "-m", str(tmp_path / "no-model"), "--precision", "int4"])
    assert result.exit_code == 1 and "unknown precision 'int4'" in result.output
    result = runner.invoke(app, [*args, "-m", str(tmp_path / "no-model"), "--dimensions", "0"])
    assert result.exit_code == 1 and "--dimensions must be at least 1" in result.output
    result = runner.invoke(app, [*args, "-m", str(tiny_llama), "--dimensions", "64"])
    assert result.exit_code == 1 and "outside [1, 32]" in result.output and "Traceback" not in result.output
    assert not out.exists()
    args += ["-m", str(tiny_llama)]
    result = runner.invoke(app, [*args, "--dimensions", "16", "--precision", "binary"])
    assert result.exit_code == 0, result.output
    before = snapshot(out)
    result = runner.invoke(app, [*args, "--dimensions", "8", "--precision", "binary"])
    assert result.exit_code == 1 and "dimensions 16 (now 8)" in result.output
    result = runner.invoke(app, [*args, "--dimensions", "16"])
    assert result.exit_code == 1 and "precision 'binary' (now 'float32')" in result.output
    assert snapshot(out) == before
    (out / "data" / "part-00001.parquet").unlink()
    result = runner.invoke(app, [*args, "--dimensions", "16", "--precision", "binary"])
    assert result.exit_code == 0 and "(1 already done)" in result.output
    assert read_shards(out)[1].dtype == np.int8


def test_int8_uses_the_encoders_own_calibration_sample(tiny_llama, tmp_path):
    """An encoder saved after calibrate() quantizes as its encode() does, not with a corpus sample."""
    encoder = Encoder.from_pretrained(tiny_llama)
    encoder.calibrate(["the cat sat on the mat", "hi", "one", "a quick brown fox"])
    model = encoder.save(tmp_path / "calibrated")
    texts = ["first text here", "second one", "the third text"]
    source = tmp_path / "t.txt"
    source.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out"
    embed_corpus_files([str(source)], out, model=str(model), precision="int8", dimensions=8)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["source"] == "the encoder's calibration sample"
    np.testing.assert_array_equal(read_shards(out)[1], encoder.encode(texts, precision="int8", dimensions=8))


@pytest.mark.parametrize("damage", ["nan", "invert"])
def test_edited_manifest_ranges_are_refused_on_resume(tiny_llama, tmp_path, damage):
    """The int8 ranges recorded in manifest.json are read back on resume: NaN ones would write zero shards
    and inverted ones reversed codes, so they are an error naming the file and the dimension."""
    source = tmp_path / "t.txt"
    source.write_text("first text here\nsecond one\nthe third text\n")
    out = tmp_path / "out"
    embed_corpus_files([str(source)], out, model=str(tiny_llama), precision="int8", shard_size=1)
    manifest = json.loads((out / "manifest.json").read_text())
    ranges = np.asarray(manifest["calibration"]["ranges"])
    ranges[:, 1] = np.nan if damage == "nan" else ranges[::-1, 1]
    manifest["calibration"]["ranges"] = [[None if np.isnan(v) else v for v in row] for row in ranges.tolist()]
    (out / "manifest.json").write_text(json.dumps(manifest))
    next(p for p in sorted(out.rglob("*.parquet"))).unlink()  # one shard to redo
    with pytest.raises(Decoder2VecError, match=r"manifest\.json: calibration\.ranges: dimension 1 has"):
        embed_corpus_files([str(source)], out, model=str(tiny_llama), precision="int8", shard_size=1)


def test_changed_input_file_is_named(tiny_llama, tmp_path):
    source = tmp_path / "t.txt"
    source.write_text("one text\nanother text\n")
    out = tmp_path / "out"
    embed_corpus_files([str(source)], out, model=str(tiny_llama), shard_size=1)
    source.write_text("one text\nanother text, edited\n")
    before = snapshot(out)
    with pytest.raises(Decoder2VecError, match=r"input .*t\.txt changed \(sha256"):
        embed_corpus_files([str(source)], out, model=str(tiny_llama), shard_size=1)
    assert snapshot(out) == before


def test_folder_we_did_not_make_is_refused(tiny_llama, tmp_path):
    source = tmp_path / "t.txt"
    source.write_text("one text\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.md").write_text("mine")
    result = runner.invoke(
        app, ["embed-corpus", str(source), "--out", str(tmp_path / "out"), "-m", str(tiny_llama)]
    )
    assert result.exit_code == 1 and "has no manifest.json: it was not made by embed-corpus" in result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.md"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", "", "empty.jsonl: holds no texts"),
        ("blank.txt", "\n  \n", "blank.txt: holds no texts"),
        ("bad.jsonl", '{"text": "ok"}\n{"body": "x"}\n', "bad.jsonl:2: no 'text' field"),
        ("bad.jsonl", '{"text": "ok"}\n\n{"text": "  "}\n', "bad.jsonl:3: the text is empty"),
        ("bad.jsonl", '{"text": "ok"}\n{"text": 5}\n', "bad.jsonl:2: the text is int, not a string"),
        (
            "bad.jsonl",
            '{"id": 1, "text": "a"}\n{"id": "1", "text": "b"}\n',
            "bad.jsonl:2: duplicate id '1' (first at",
        ),
        ("bad.jsonl", '{"text": "ok"}\n{"text": \n', "bad.jsonl:2: not valid JSON"),
        ("bad.jsonl", '{"id": null, "text": "ok"}\n', "bad.jsonl:1: the id must be"),
        ("bad.parquet", None, "bad.parquet:2: the text is empty"),
    ],
)
def test_bad_input_is_named_before_any_model_loads(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        pq.write_table(pa.table({"text": ["fine", ""]}), path)
    else:
        path.write_text(content)
    # A model that does not exist: the input error must come first.
    args = ["embed-corpus", str(path), "--out", str(tmp_path / "out"), "-m", str(tmp_path / "no-model")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_missing_inputs_and_bad_options(tiny_llama, tmp_path):
    result = runner.invoke(app, ["embed-corpus", str(tmp_path / "*.jsonl"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no input file matches" in result.output
    (tmp_path / "t.txt").write_text("x\n")
    result = runner.invoke(
        app, ["embed-corpus", str(tmp_path / "t.txt"), "-o", str(tmp_path / "o"), "--engine", "spark"]
    )
    assert result.exit_code == 1 and "--engine must be one of local, ray" in result.output
    args = ["embed-corpus", str(tmp_path / "t.txt"), "-o", str(tmp_path / "o"), "-m", str(tiny_llama)]
    result = runner.invoke(app, [*args, "--max-length", "9999"])
    assert (
        result.exit_code == 1
        and "--max-length 9999 must be between 2 and the model's context of 256" in result.output
    )
    result = runner.invoke(app, [*args, "--max-length", "1"])
    assert result.exit_code == 1 and "--max-length 1 must be between 2" in result.output
    # An instruction that leaves no room for text: found on the tokenizer, before the manifest is written.
    result = runner.invoke(app, [*args, "--max-length", "8", "--instruction", "word " * 20])
    assert result.exit_code == 1 and "--instruction: the instruction takes" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_a_model_changed_under_the_same_path_is_refused(tiny_llama, tmp_path):
    """Resuming with retrained weights in the same folder would mix two models' embeddings."""
    import shutil

    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    source = tmp_path / "t.txt"
    source.write_text("one text\nanother text\n")
    out = tmp_path / "out"
    embed_corpus_files([str(source)], out, model=str(model), shard_size=1)
    (out / "data" / "part-00001.parquet").unlink()  # an interrupted run, to be resumed
    weights = load_file(model / "model.safetensors")
    save_file({k: v + 0.01 for k, v in weights.items()}, model / "model.safetensors", {"format": "pt"})
    before = snapshot(out)
    with pytest.raises(Decoder2VecError, match="model_fingerprint"):
        embed_corpus_files([str(source)], out, model=str(model), shard_size=1)
    assert snapshot(out) == before


def test_lines_split_at_newlines_only(tiny_llama, tmp_path):
    """A form feed or U+2028 inside a record neither splits it nor shifts later line numbers."""
    text = tmp_path / "t.txt"
    text.write_bytes("first\r\nsecond\x0cpage\nthird\u2028line\n".encode())
    jsonl = tmp_path / "u.jsonl"
    jsonl.write_text(json.dumps({"text": "a\u2028b"}, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    embed_corpus_files([str(text), str(jsonl)], out, model=str(tiny_llama), shard_size=8)
    ids, _ = read_shards(out)
    assert list(ids) == [f"{text}:1", f"{text}:2", f"{text}:3", f"{jsonl}:1"]


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(Decoder2VecError, match=r"pip install 'decoder2vec\[scale\]'"):
        import_ray()


def test_gatherer_writes_each_shard_once_complete_in_any_order(tmp_path):
    from decoder2vec.corpus.inputs import Corpus
    from decoder2vec.corpus.progress import ShardProgress
    from decoder2vec.corpus.shards import plan_shards

    corpus = Corpus(ids=[f"i{k}" for k in range(7)], texts=["t"] * 7)
    plan = plan_shards(7, 3)
    gather = ShardGatherer(corpus, plan, [0, 1, 2], tmp_path, ShardProgress(7, 0, 3, 0, False))
    vectors = np.arange(14, dtype=np.float32).reshape(7, 2)
    gather.add(np.array([6, 1, 0]), vectors[[6, 1, 0]])
    assert files(tmp_path) == ["data/part-00002.parquet", "done/part-00002.json"]
    gather.add(np.array([5, 2, 4, 3]), vectors[[5, 2, 4, 3]])
    gather.check_done()
    table = pq.read_table(tmp_path / "data")
    assert table.column("id").to_pylist() == corpus.ids
    assert np.array_equal(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), vectors)
    # Compact precisions keep their dtype in the shard.
    gather = ShardGatherer(corpus, plan, [2], tmp_path / "int8", ShardProgress(7, 0, 3, 0, False))
    gather.add(np.array([6]), np.array([[-3, 7]], dtype=np.int8))
    schema = pq.read_schema(tmp_path / "int8" / "data" / "part-00002.parquet")
    assert schema.field("embedding").type == pa.list_(pa.int8(), 2)


def test_ray_engine_on_a_local_cluster_gives_the_local_rows(corpus, reference, tiny_llama, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, logging_level="WARNING")
    try:
        out = tmp_path / "out"
        result = runner.invoke(
            app,
            [
                "embed-corpus",
                *corpus["inputs"],
                "--out",
                str(out),
                "-m",
                str(tiny_llama),
                "--shard-size",
                str(SHARD_SIZE),
                "--batch-size",
                "16",
                "--engine",
                "ray",
                "--num-workers",
                "2",
            ],
        )
        assert result.exit_code == 0, result.output
        assert ray.is_initialized()  # a Ray the caller started is left running
        # int8: a first Ray pass embeds the calibration sample; the driver records its ranges.
        compact = tmp_path / "compact"
        args = ["embed-corpus", str(corpus["folder"] / "c.txt"), "-o", str(compact), "-m", str(tiny_llama)]
        options = ["--shard-size", "16", "--batch-size", "16", "--dimensions", "16", "--precision", "int8"]
        result = runner.invoke(app, [*args, *options, "--engine", "ray", "--num-workers", "2"])
        assert result.exit_code == 0, result.output
    finally:
        ray.shutdown()
    ids, embeddings = read_shards(out)
    ref_ids, ref_embeddings = read_shards(reference)
    assert ids == ref_ids
    np.testing.assert_allclose(embeddings, ref_embeddings, atol=1e-5)
    assert json.loads((out / "manifest.json").read_text()) == json.loads(
        (reference / "manifest.json").read_text()
    )
    texts = corpus["texts"][250:]
    encoder = Encoder.from_pretrained(tiny_llama)
    encoder.calibrate(texts, batch_size=16)
    ranges = np.array(json.loads((compact / "manifest.json").read_text())["calibration"]["ranges"])
    np.testing.assert_allclose(ranges, encoder.output_spec(dimensions=16, precision="int8").ranges, atol=1e-5)
    _, rows = read_shards(compact)
    expected = encoder.encode(texts, batch_size=16, dimensions=16, precision="int8", ranges=ranges)
    assert rows.dtype == np.int8 and rows.shape == (50, 16)
    # Other threads and batches move floats by ~1e-7: at most a rare step across a level boundary.
    assert np.abs(rows.astype(int) - expected.astype(int)).max() <= 1
    assert (rows == expected).mean() > 0.99


@pytest.mark.slow
def test_parquet_input_errors_exit_1_every_time(tmp_path):
    """A bad Parquet record printed its error and then, in about half the runs, aborted with exit 134
    ("terminate called without an active exception"): pq.read_table left an Arrow pool thread alive at
    exit with torch loaded. Fifteen runs over a null text, an empty text and a missing column must all exit
    1 with the one-line error (the chance of 15 clean exits with the old reader was about 0.5 ** 15)."""
    cases = {
        "null": (pa.table({"text": ["a text", None]}), ":2: the text is NoneType"),
        "empty": (pa.table({"text": ["a text", "  "]}), ":2: the text is empty"),
        "column": (pa.table({"body": ["a text"]}), "no 'text' column"),
    }
    for name, (table, _) in cases.items():
        pq.write_table(table, tmp_path / f"{name}.parquet")

    def start(run: int) -> subprocess.Popen:
        name = list(cases)[run % 3]
        return subprocess.Popen(
            [sys.executable, "-m", "decoder2vec.cli", "embed-corpus", str(tmp_path / f"{name}.parquet"),
             "--out", str(tmp_path / "out"), "--model", str(tmp_path / "no-model")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    for first in range(0, 15, 5):  # five at a time: the same 15 exits in a third of the wall time
        runs = {run: start(run) for run in range(first, first + 5)}
        for run, process in runs.items():
            _, stderr = process.communicate(timeout=180)
            name = list(cases)[run % 3]
            assert process.returncode == 1, (run, name, process.returncode, stderr[-500:])
            assert stderr.startswith("error: ") and cases[name][1] in stderr, stderr
            assert "terminate called" not in stderr


@pytest.mark.parametrize("planted", ["data", "done"])
def test_resume_never_writes_through_a_planted_symlink(tiny_llama, tmp_path, planted):
    """data/ or done/ replaced by a link to a folder elsewhere: a resume would write shards and records
    (and clean temporary files) there. It is refused before any model loads; the outside folder is untouched."""
    import shutil

    source = tmp_path / "t.txt"
    source.write_text("first text here\nsecond one\nthe third text\n")
    out = tmp_path / "out"
    embed_corpus_files([str(source)], out, model=str(tiny_llama), shard_size=1)
    outside = tmp_path / "outside"
    shutil.copytree(out / planted, outside)
    shutil.rmtree(out / planted)
    (out / planted).symlink_to(outside)
    next(iter(sorted(outside.iterdir()))).unlink()  # one shard (or record) to redo
    before = snapshot(outside)
    with pytest.raises(Decoder2VecError, match=f"{planted} is a symbolic link"):
        embed_corpus_files([str(source)], out, model=str(tiny_llama), shard_size=1)
    assert snapshot(outside) == before
