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
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def test_local_engine_rows_equal_encoder_encode(corpus, reference, tiny_llama):
    ids, embeddings = read_shards(reference)
    assert ids == corpus["ids"] and len(set(ids)) == 300
    encoder = Encoder.from_pretrained(tiny_llama)
    expected = encoder.encode(corpus["texts"], batch_size=32)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    schema = pq.read_schema(reference / "part-00000.parquet")
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
        while not (out / "part-00000.parquet").exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no shard appeared"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00000.parquet"]
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    (out / ".part-00001.parquet.x1y2z3").write_bytes(b"half a shard")  # as a kill during a write leaves

    result = runner.invoke(app, [*args, "--batch-size", "8"])  # how to run may change; what to compute not
    assert result.exit_code == 0, result.output
    assert "(1 already done)" in result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    ids, embeddings = read_shards(out)
    ref_ids, ref_embeddings = read_shards(reference)
    assert ids == ref_ids and len(set(ids)) == len(ids) == 300
    np.testing.assert_allclose(embeddings, ref_embeddings, atol=1e-5)
    assert json.loads((out / "manifest.json").read_text())["complete"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--normalize"], "normalize False (now True)"),
        (["--instruction", "Query: "], "instruction None (now 'Query: ')"),
        (["--shard-size", "10"], "shard_size 64 (now 10)"),
        (["--pooling", "last_token"], "pooling 'mean' (now 'last_token')"),
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
    (out / "part-00001.parquet").unlink()  # an interrupted run, to be resumed
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00002.parquet"]
    gather.add(np.array([5, 2, 4, 3]), vectors[[5, 2, 4, 3]])
    gather.check_done()
    ids, embeddings = read_shards(tmp_path)
    assert ids == corpus.ids and np.array_equal(embeddings, vectors)


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
    finally:
        ray.shutdown()
    ids, embeddings = read_shards(out)
    ref_ids, ref_embeddings = read_shards(reference)
    assert ids == ref_ids
    np.testing.assert_allclose(embeddings, ref_embeddings, atol=1e-5)
    assert json.loads((out / "manifest.json").read_text()) == json.loads(
        (reference / "manifest.json").read_text()
    )
