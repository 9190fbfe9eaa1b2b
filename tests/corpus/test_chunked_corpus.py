"""``embed-corpus --chunking``: a row per chunk, equal to ``Encoder.encode_chunks``, resumed exactly after
SIGKILL, chunking settings kept in the manifest, bad options and documents refused before a model loads."""

import json
import os
import shutil
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
from decoder2vec.corpus.progress import HANG_AFTER_SHARDS_ENV
from tests.conftest import BYTE_CORPUS

runner = CliRunner()
DOCS = 12


def make_documents(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(BYTE_CORPUS, size=int(rng.integers(1, 6)))) for _ in range(n)]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(make_documents(DOCS)))
    )
    return path


def chunk_args(source: Path, out: Path, model: Path, *extra: str) -> list[str]:
    args = ["embed-corpus", str(source), "-o", str(out), "-m", str(model), "--shard-size", "5"]
    return [*args, "--chunking", "late", "--chunk-size", "12", "--chunk-overlap", "2", *extra]


@pytest.fixture(scope="module")
def reference(source, tiny_byte_llama, tmp_path_factory) -> Path:
    """An uninterrupted late-chunking run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    result = runner.invoke(app, chunk_args(source, out, tiny_byte_llama))
    assert result.exit_code == 0, result.output
    return out


def expected_rows(model: Path, texts: list[str], **options) -> dict:
    encoder = Encoder.from_pretrained(model)
    ids, chunk, start, end, vectors = [], [], [], [], []
    for i, chunks in enumerate(encoder.encode_chunks(texts, **options)):
        for k, c in enumerate(chunks):
            ids.append(f"d{i}")
            chunk.append(k)
            start.append(c.start)
            end.append(c.end)
            vectors.append(c.embedding)
    return {"id": ids, "chunk": chunk, "start": start, "end": end, "embedding": np.stack(vectors)}


def table_rows(out: Path) -> dict:
    table = pq.read_table(out / "data")
    column = table.column("embedding").combine_chunks()
    rows = {name: table.column(name).to_pylist() for name in ("id", "chunk", "start", "end")}
    return rows | {"embedding": column.values.to_numpy().reshape(len(column), column.type.list_size)}


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_late_chunk_rows_equal_encode_chunks(source, reference, tiny_byte_llama):
    texts = [json.loads(line)["text"] for line in source.read_text().splitlines()]
    rows = table_rows(reference)
    expected = expected_rows(tiny_byte_llama, texts, chunking="sentences", chunk_size=12, overlap=2)
    assert {k: rows[k] for k in ("id", "chunk", "start", "end")} == {
        k: expected[k] for k in ("id", "chunk", "start", "end")
    }
    np.testing.assert_allclose(rows["embedding"], expected["embedding"], atol=1e-5)
    assert set(rows["id"]) == {f"d{i}" for i in range(DOCS)} and len(rows["id"]) > 2 * DOCS
    for doc_id, start, end in zip(rows["id"], rows["start"], rows["end"]):
        assert texts[int(doc_id[1:])][start:end].strip()
    schema = pq.read_schema(reference / "data" / "part-00000.parquet")
    assert schema.names == ["id", "chunk", "start", "end", "embedding"]
    assert schema.field("chunk").type == pa.int32() and schema.field("start").type == pa.int64()
    manifest = json.loads((reference / "manifest.json").read_text())
    settings = manifest["settings"]
    assert (
        settings["chunking"],
        settings["chunk_by"],
        settings["chunk_size"],
        settings["chunk_overlap"],
    ) == (
        "late",
        "sentences",
        12,
        2,
    )
    assert manifest["rows"] == DOCS and manifest["shards"] == 3 and manifest["complete"]
    record = json.loads((reference / "done" / "part-00000.json").read_text())
    assert record["rows"] == 5 and record["chunks"] == rows["id"].count("d0") + sum(
        rows["id"].count(f"d{i}") for i in range(1, 5)
    )


def test_naive_compact_chunk_rows_equal_encode_chunks(source, tiny_byte_llama, tmp_path):
    texts = [json.loads(line)["text"] for line in source.read_text().splitlines()]
    out = tmp_path / "out"
    args = ["embed-corpus", str(source), "-o", str(out), "-m", str(tiny_byte_llama), "--chunking", "naive"]
    extra = ["--chunk-by", "tokens", "--chunk-size", "10", "--dimensions", "16", "--precision", "binary"]
    result = runner.invoke(app, [*args, *extra, "--normalize"])
    assert result.exit_code == 0, result.output
    rows = table_rows(out)
    expected = expected_rows(
        tiny_byte_llama,
        texts,
        chunking="tokens",
        chunk_size=10,
        late=False,
        dimensions=16,
        precision="binary",
    )
    assert rows["start"] == expected["start"] and rows["end"] == expected["end"]
    np.testing.assert_array_equal(rows["embedding"], expected["embedding"])
    assert (
        f"wrote {len(rows['id'])} chunk embeddings of {DOCS} documents, dimension 16 as binary"
        in result.output
    )


def test_sigkill_mid_run_then_rerun_gives_the_same_rows(source, reference, tiny_byte_llama, tmp_path):
    out = tmp_path / "out"
    args = chunk_args(source, out, tiny_byte_llama)
    env = {**os.environ, HANG_AFTER_SHARDS_ENV: "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "decoder2vec.cli", *args], env=env, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "done" / "part-00000.json").exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no shard appeared"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert files(out) == ["data/part-00000.parquet", "done/part-00000.json", "manifest.json"]
    result = runner.invoke(app, [*args, "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "(1 already done)" in result.output
    assert files(out) == files(reference)
    rows, ref = table_rows(out), table_rows(reference)
    assert {k: rows[k] for k in ("id", "chunk", "start", "end")} == {
        k: ref[k] for k in ("id", "chunk", "start", "end")
    }
    np.testing.assert_allclose(rows["embedding"], ref["embedding"], atol=1e-5)
    # A damaged chunk shard is embedded again, never trusted.
    shard = out / "data" / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-10])
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "(2 already done)" in result.output
    np.testing.assert_allclose(table_rows(out)["embedding"], ref["embedding"], atol=1e-5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--chunk-size", "16"], "chunk_size 12 (now 16)"),
        (["--chunk-overlap", "0"], "chunk_overlap 2 (now 0)"),
        (["--chunk-by", "tokens"], "chunk_by 'sentences' (now 'tokens')"),
        (["--chunking", "naive"], "chunking 'late' (now 'naive')"),
        (["--no-chunking"], "chunking 'late' (now None)"),
    ],
)
def test_other_chunk_settings_are_refused(source, reference, tiny_byte_llama, tmp_path, extra, message):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    args = chunk_args(source, out, tiny_byte_llama)
    if extra == ["--no-chunking"]:
        args, extra = args[: args.index("--chunking")], []
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 1 and "holds embeddings made with other settings" in result.output
    assert message in result.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--chunking", "late", "--chunk-size", "0"], "--chunk-size must be at least 1, got 0"),
        (
            ["--chunking", "late", "--chunk-size", "8", "--chunk-overlap", "8"],
            "smaller than --chunk-size 8, got 8",
        ),
        (["--chunking", "late", "--chunk-overlap", "-1"], "--chunk-overlap must be at least 0"),
        (["--chunking", "pages"], "--chunking must be one of late, naive"),
        (["--chunking", "late", "--chunk-by", "pages"], "--chunk-by must be one of sentences, tokens"),
        (["--chunk-size", "100"], "--chunk-size only apply with --chunking late or --chunking naive"),
        (["--chunking", "late", "--engine", "ray"], "--chunking runs on --engine local only"),
    ],
)
def test_bad_chunk_options_fail_before_anything_is_read(tmp_path, extra, message):
    result = runner.invoke(
        app, ["embed-corpus", str(tmp_path / "none.txt"), "-o", str(tmp_path / "o"), "-m", "no-model", *extra]
    )
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_a_document_without_chunks_is_named_before_the_model_loads(tiny_byte_llama, tmp_path, monkeypatch):
    """A tokenizer that deletes "x": a document of x's has no token, found on the tokenizer alone."""
    from tokenizers import normalizers
    from transformers import AutoTokenizer

    model = tmp_path / "model"
    shutil.copytree(tiny_byte_llama, model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.backend_tokenizer.normalizer = normalizers.Replace("x", "")
    tokenizer.save_pretrained(model)
    source = tmp_path / "t.txt"
    source.write_text("a fine text\n\nxx xxx\n")
    monkeypatch.setattr(Encoder, "from_pretrained", lambda *a, **k: pytest.fail("the model loaded"))
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["embed-corpus", str(source), "-o", str(out), "-m", str(model), "--chunking", "late"]
    )
    assert result.exit_code == 1 and f"{source}:3 yields no chunk" in result.output
    assert not out.exists()
    result = runner.invoke(
        app,
        [
            "embed-corpus",
            str(source),
            "-o",
            str(out),
            "-m",
            str(model),
            "--chunking",
            "naive",
            "--chunk-size",
            "999",
        ],
    )
    assert result.exit_code == 1 and "--chunk-size 999 exceeds --max-length 256" in result.output
