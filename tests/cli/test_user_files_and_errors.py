"""Issue #9: never lose a user's files, and fail early with errors that point at the cause.

One test (or parametrised case) per item; each fails on the code before the fix.
"""

import json
import os
import re
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from decoder2vec import Encoder
from decoder2vec.cli import app
from decoder2vec.errors import ConfigError, InputError, ModelLoadError, OutputExistsError
from tests.conftest import SENTENCES

runner = CliRunner()


# ---------------------------------------------------------------- 1. save never deletes user files
def test_save_refuses_a_folder_that_is_not_an_encoder(tiny_llama, tmp_path):
    userdir = tmp_path / "userdir"
    userdir.mkdir()
    (userdir / "thesis.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="holds no saved encoder"):
        Encoder.from_pretrained(tiny_llama).save(userdir)
    with pytest.raises(OutputExistsError):
        Encoder.from_pretrained(tiny_llama).save(userdir, overwrite=True)
    assert (userdir / "thesis.txt").read_text() == "x"
    assert sorted(p.name for p in userdir.iterdir()) == ["thesis.txt"]


def test_overwrite_replaces_only_the_encoders_own_files(tiny_llama, tmp_path):
    enc = Encoder.from_pretrained(tiny_llama)
    enc.save(tmp_path / "enc")
    (tmp_path / "enc" / "README.md").write_text("mine")
    (tmp_path / "enc" / "reports").mkdir()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        enc.save(tmp_path / "enc")
    Encoder.from_pretrained(tiny_llama, pooling="bos").save(tmp_path / "enc", overwrite=True)
    assert (tmp_path / "enc" / "README.md").read_text() == "mine" and (tmp_path / "enc" / "reports").is_dir()
    assert json.loads((tmp_path / "enc" / "decoder2vec_config.json").read_text())["pooling"] == "bos"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]  # no temporary folders left


# ---------------------------------------------------------------- 3. settings take effect
def test_changed_max_length_takes_effect_and_round_trips(tiny_llama, tmp_path):
    enc = Encoder.from_pretrained(tiny_llama)
    enc.max_length = 8
    fresh = Encoder.from_pretrained(tiny_llama, max_length=8)
    with pytest.warns(UserWarning, match="truncated"):
        got = enc.encode(SENTENCES)
    with pytest.warns(UserWarning):
        np.testing.assert_array_equal(got, fresh.encode(SENTENCES))
    enc.save(tmp_path / "enc")
    with pytest.warns(UserWarning):
        np.testing.assert_array_equal(Encoder.from_pretrained(tmp_path / "enc").encode(SENTENCES), got)
    with pytest.raises(ValueError, match="unknown pooling"):
        enc.pooling = "max"
    with pytest.raises(ValueError, match="exceeds the model's context"):
        enc.max_length = 10_000


# ---------------------------------------------------------------- 4. NaN never loses a report
def test_eval_report_keeps_scores_and_marks_nan(tmp_path):
    from decoder2vec.evaluation.runner import write_report

    rows = [
        {
            "variant": "model",
            "task": "stsb",
            "main_score": "cosine_spearman",
            "scores": {"cosine_spearman": 71.5},
        },
        {
            "variant": "model",
            "task": "flat",
            "main_score": "cosine_spearman",
            "scores": {"cosine_spearman": float("nan")},
        },
    ]
    json_path, md_path = write_report(tmp_path / "r", rows, {"model": "m"})
    payload = json.loads(json_path.read_text())
    assert payload["results"][0]["scores"]["cosine_spearman"] == 71.5
    assert payload["results"][1]["scores"]["cosine_spearman"] is None
    assert "constant" in payload["results"][1]["note"]
    md = md_path.read_text()
    assert "71.50" in md and "NaN" in md and "model/flat" in md


# ---------------------------------------------------------------- 5. ordinary permissions
def test_saved_and_cached_folders_get_mkdir_permissions(tiny_llama, tmp_path):
    from decoder2vec.io import publish_folder

    old = os.umask(0o022)
    try:
        folder = Encoder.from_pretrained(tiny_llama).save(tmp_path / "enc")
        cached = publish_folder(tmp_path / "cache" / "m", lambda d: (d / "f").write_text("x"))
    finally:
        os.umask(old)
    for path in (folder, cached):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
    assert stat.S_IMODE((folder / "config.json").stat().st_mode) == 0o644


# ---------------------------------------------------------------- 6. --format
def test_format_text_reads_a_brace_line_as_text(tiny_llama, tmp_path):
    source = tmp_path / "notes.txt"
    source.write_text("{not json} but a sentence\nanother one\n")
    out = tmp_path / "e.npy"
    result = runner.invoke(
        app, ["encode", str(source), "-o", str(out), "-m", str(tiny_llama), "--format", "text"]
    )
    assert result.exit_code == 0, result.output
    assert np.load(out).shape[0] == 2
    # auto goes by the extension: a .txt file is text too
    result = runner.invoke(app, ["encode", str(source), "-o", str(out), "-m", str(tiny_llama), "--overwrite"])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- 7. broken Unicode
@pytest.mark.parametrize(
    ("name", "data", "args", "message"),
    [
        ("s.jsonl", b'{"text": "ok"}\n{"text": "bad \\ud800 here"}\n', [], "s.jsonl:2: broken Unicode"),
        ("l.txt", "caf\u00e9\nna\u00efve\n".encode("latin-1"), [], "l.txt:1: not valid UTF-8"),
        ("-", b"fine\n\xff\xfe broken\n", [], "<stdin>:2: not valid UTF-8"),
    ],
)
def test_broken_unicode_names_file_and_line(tiny_llama, tmp_path, name, data, args, message):
    out = str(tmp_path / "e.npy")
    if name == "-":
        result = runner.invoke(app, ["encode", "-", "-o", out, "-m", str(tiny_llama), *args], input=data)
    else:
        (tmp_path / name).write_bytes(data)
        result = runner.invoke(app, ["encode", str(tmp_path / name), "-o", out, "-m", str(tiny_llama), *args])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output


def test_library_names_the_text_index_of_broken_unicode(tiny_llama):
    with pytest.raises(InputError, match=r"texts\[1\]: broken Unicode"):
        Encoder.from_pretrained(tiny_llama).encode(["fine", "bad \ud800"])


# ---------------------------------------------------------------- 8/9. convert and train check first
def test_convert_checks_every_stage_before_the_first_step(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(SENTENCES * 3) + "\n")
    out = tmp_path / "out"
    started = time.perf_counter()
    result = runner.invoke(
        app,
        ["convert", "--model", str(tmp_path / "no-such-model"), "--out", str(out), "--mntp-data", str(corpus),
         "--simcse-data", str(tmp_path / "missing.txt")],
    )  # fmt: skip
    assert result.exit_code == 1 and "missing.txt" in result.output, result.output
    assert not out.exists()  # nothing written, and the (missing) model was never loaded
    assert time.perf_counter() - started < 30


def test_rejected_setting_leaves_nothing_behind(tiny_llama, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(SENTENCES * 5) + "\n")
    out = tmp_path / "run"
    base = ["train", "mntp", "--out", str(out), "--model", str(tiny_llama), "--data", str(corpus),
            "--steps", "1", "--batch-size", "2", "--max-seq-length", "16"]  # fmt: skip
    for bad in (["--mask-probability", "1.5"], ["--lr", "-1"], ["--steps", "0"]):
        result = runner.invoke(app, base + bad)
        assert result.exit_code == 1 and "error:" in result.output, result.output
        assert not out.exists()
    result = runner.invoke(app, base)  # the corrected command is not refused
    assert result.exit_code == 0, result.output


def test_resume_on_an_empty_folder_is_an_error(tiny_llama, tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        app, ["train", "simcse", "--out", str(tmp_path / "empty"), "--model", str(tiny_llama), "--resume"]
    )
    assert result.exit_code == 1 and "nothing to resume" in result.output
    result = runner.invoke(
        app, ["convert", "--out", str(tmp_path / "empty"), "--model", str(tiny_llama), "--resume"]
    )
    assert result.exit_code == 1 and "nothing to resume" in result.output


def test_recipe_values_are_type_checked(tmp_path):
    from decoder2vec.training.config import MNTPConfig, load_stage

    recipe = tmp_path / "r.yaml"
    recipe.write_text('mntp:\n  max_steps: "10"\n')
    with pytest.raises(ConfigError, match=r"r.yaml:mntp: max_steps must be int, got str '10'"):
        load_stage(MNTPConfig, str(recipe), "mntp")


# ---------------------------------------------------------------- 10. checked before a model loads
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pooling", "max"], "--pooling 'max' is not one of"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--max-length", "1"], "--max-length must be at least 2"),
        (["--dimensions", "0"], "--dimensions must be a positive integer"),
        (["--precision", "int4"], "--precision 'int4' is not one of"),
    ],
)
def test_encode_options_fail_before_the_model_loads(tmp_path, extra, message):
    (tmp_path / "t.txt").write_text("hello\n")
    # the model does not exist: the option error must come first
    result = runner.invoke(app, ["encode", str(tmp_path / "t.txt"), "-o", str(tmp_path / "e.npy"),
                                 "-m", str(tmp_path / "nope"), *extra])  # fmt: skip
    assert result.exit_code == 1 and message in result.output, result.output


def test_output_onto_a_folder_fails_first(tmp_path):
    (tmp_path / "t.txt").write_text("hello\n")
    (tmp_path / "dir.npy").mkdir()
    result = runner.invoke(
        app,
        ["encode", str(tmp_path / "t.txt"), "-o", str(tmp_path / "dir.npy"), "-m", str(tmp_path / "nope")],
    )
    assert result.exit_code == 1 and "is a folder" in result.output


def test_max_length_beyond_context_is_refused(tiny_llama):
    with pytest.raises(ValueError, match="exceeds the model's context of 256"):
        Encoder.from_pretrained(tiny_llama, max_length=4096)


@pytest.mark.parametrize(("texts", "error"), [({"a": 1}, TypeError), ({"a", "b"}, TypeError)])
def test_unordered_inputs_are_rejected(tiny_llama, texts, error):
    with pytest.raises(error, match="ordered sequence"):
        Encoder.from_pretrained(tiny_llama).encode(texts)


def test_fractional_batch_size_is_a_type_error(tiny_llama):
    with pytest.raises(TypeError, match="batch_size must be a positive integer"):
        Encoder.from_pretrained(tiny_llama).encode(SENTENCES, batch_size=1.5)


def test_mistyped_model_name_fails_fast_offline(monkeypatch):
    from decoder2vec.backbone.loading import resolve_model_path

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match="neither a local folder"):
        resolve_model_path("smollm2-135")
    assert time.perf_counter() - started < 5


def test_damaged_cache_names_the_folder_to_delete(tmp_path, monkeypatch):
    from decoder2vec.backbone import default_model

    monkeypatch.setenv("DECODER2VEC_HOME", str(tmp_path))
    folder = tmp_path / "models" / default_model._CACHE_NAME
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"half")
    # (the old code also named the folder, as "not empty": the test pins the instruction to delete it)
    with pytest.raises(
        ModelLoadError, match=rf"cache {re.escape(str(folder))} is damaged .*delete that folder"
    ):
        default_model.default_model_folder()


# ---------------------------------------------------------------- 11. noise
def test_cli_warnings_are_one_line(tiny_llama, tmp_path):
    (tmp_path / "t.txt").write_text("a long sentence that will not fit in eight tokens at all\n")
    code = (
        "import sys; from decoder2vec.cli import app; "
        f"sys.argv=['decoder2vec','encode',{str(tmp_path / 't.txt')!r},'-o',{str(tmp_path / 'e.npy')!r},"
        f"'-m',{str(tiny_llama)!r},'--max-length','8']; app()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: 1 of 1 texts were longer than max_length=8" in proc.stderr
    assert "warnings.warn" not in proc.stderr and "LOAD REPORT" not in proc.stderr
