"""The stage registry drives the CLI and convert; convert's final distill stage; ``convert --resume`` alone."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from decoder2vec.cli import app
from decoder2vec.training.cli import STAGE_FLAGS
from decoder2vec.training.config import STAGES, PipelineConfig

runner = CliRunner()

TINY = """
pooling: mean
stages: [simcse, distill]
simcse: {max_seq_length: 16, batch_size: 4, save_every: 1, log_every: 1, learning_rate: 5.0e-3}
distill: {max_seq_length: 16, batch_size: 4, save_every: 1, log_every: 1, learning_rate: 5.0e-3, student_layers: 1}
"""


def test_the_registry_drives_the_commands_and_the_pipeline_settings():
    from decoder2vec import training

    listing = runner.invoke(app, ["train", "--help"]).output
    convert_help = runner.invoke(app, ["convert", "--help"]).output
    fields = {f.name for f in dataclasses.fields(PipelineConfig)}
    for name, spec in STAGES.items():
        assert name in listing and name in fields and isinstance(getattr(PipelineConfig(), name), spec.config)
        assert f"--{name}-steps" in convert_help and f"--{name}-data" in convert_help
        assert callable(getattr(training, f"run_{name}"))
        stage_help = runner.invoke(app, ["train", name, "--help"])
        assert stage_help.exit_code == 0
        for option in STAGE_FLAGS[name].options:
            assert option.flags[0].split("/")[0] in stage_help.output
    assert PipelineConfig().stages == ["mntp", "simcse", "supervised"]  # distill only when asked for
    distill_help = runner.invoke(app, ["train", "distill", "--help"]).output
    assert "--teacher" in distill_help and "--student " in distill_help and "--merge" not in distill_help


def args(model, out, recipe, corpus):
    return ["convert", "--model", str(model), "--out", str(out), "--config", str(recipe),
            "--simcse-steps", "2", "--distill-steps", "2", "--simcse-data", str(corpus),
            "--distill-data", str(corpus)]  # fmt: skip


def test_convert_distills_the_encoder_it_made_and_resumes_from_its_own_record(
    tiny_word_llama, text_corpus, tmp_path
):
    from decoder2vec import Encoder

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    out = tmp_path / "encoder"
    result = runner.invoke(app, args(tiny_word_llama, out, recipe, text_corpus))
    assert result.exit_code == 0, result.output
    record = json.loads((out / "recipe.json").read_text())
    assert [s["name"] for s in record["stages"]] == ["simcse", "distill"]
    assert record["teacher"] == "stages/teacher" and record["stages"][1]["teacher"] == "stages/teacher"
    assert not (out / "adapters").exists()  # the simcse adapter applies to the teacher, not to the student
    student, teacher = Encoder.from_pretrained(out), Encoder.from_pretrained(out / "stages" / "teacher")
    assert student.model.config.num_hidden_layers == 1 and teacher.model.config.num_hidden_layers == 2
    assert (out / "stages" / "pipeline.json").is_file()
    weights = (out / "model.safetensors").read_bytes()

    # --resume alone continues with the recorded settings (nothing left to train: the same encoder)
    resumed = runner.invoke(app, ["convert", "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (out / "model.safetensors").read_bytes() == weights
    # ... from a finished conversion's recipe.json too (a conversion written before pipeline.json existed)
    (out / "stages" / "pipeline.json").unlink()
    assert runner.invoke(app, ["convert", "--out", str(out), "--resume"]).exit_code == 0
    # repeated flags that agree are fine; flags that differ are refused, naming every difference
    same = runner.invoke(app, [*args(tiny_word_llama, out, recipe, text_corpus), "--resume"])
    assert same.exit_code == 0, same.output
    other = runner.invoke(
        app,
        [
            "convert",
            "--out",
            str(out),
            "--resume",
            "--simcse-steps",
            "3",
            "--set",
            "distill.student_layers=2",
        ],
    )
    assert other.exit_code == 1
    assert "simcse.max_steps: 2 (saved) vs 3 (now)" in other.output
    assert "distill.student_layers: 1 (saved) vs 2 (now)" in other.output


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("distill.student_layers=null", "distill.student_layers is not set"),
        ("distill.student_layers=5", "has 2 decoder layers"),
        ("stages=[distill, simcse]", "must be the last stage"),
        ("distill.teacher=elsewhere", "in convert the teacher is the encoder the previous stages make"),
    ],
)
def test_convert_checks_the_distill_stage_before_anything_runs(
    setting, message, tiny_word_llama, text_corpus, tmp_path
):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    out = tmp_path / "encoder"
    result = runner.invoke(app, [*args(tiny_word_llama, out, recipe, text_corpus), "--set", setting])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not out.exists()


def test_a_conversion_failing_before_any_checkpoint_leaves_nothing(tiny_word_llama, text_corpus, tmp_path):
    out = tmp_path / "encoder"
    # a batch larger than the data fails in the stage's setup, after convert recorded its settings
    result = runner.invoke(app, ["convert", "--model", str(tiny_word_llama), "--out", str(out),
                                 "--simcse-data", str(text_corpus), "--set", "stages=[simcse]",
                                 "--set", "simcse.batch_size=1000"])  # fmt: skip
    assert result.exit_code == 1 and "batch size 1000" in result.output, result.output
    assert not out.exists()
