"""``--set key=value``: every recipe setting is a flag, type-checked like the recipe file itself."""

import pytest
from typer.testing import CliRunner

from decoder2vec.cli import app
from decoder2vec.errors import ConfigError
from decoder2vec.training.config import MNTPConfig, PipelineConfig, apply_overrides


def test_overrides_reach_nested_settings_with_their_types():
    cfg = apply_overrides(
        PipelineConfig(),
        ["mntp.max_steps=5", "simcse.learning_rate=3e-3", "simcse.lora.r=8", "pooling=weighted_mean",
         "mntp.mask_probability=null", "supervised.symmetric_tasks=[sts, nli]"],
    )  # fmt: skip
    assert cfg.mntp.max_steps == 5 and cfg.simcse.learning_rate == pytest.approx(3e-3)
    assert cfg.simcse.lora.r == 8 and cfg.pooling == "weighted_mean" and cfg.mntp.mask_probability is None
    assert cfg.supervised.symmetric_tasks == ["sts", "nli"]
    stage = apply_overrides(MNTPConfig(), ["mntp.batch_size=4", "max_steps=7"], prefix="mntp")
    assert (stage.batch_size, stage.max_steps) == (4, 7)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("mntp.max_steps=ten", "max_steps must be int, got str 'ten'"),
        ("mntp.max_step=10", "unknown key(s) max_step"),
        ("mntp.lora.rank=4", "unknown key(s) rank"),
        ("nope.max_steps=1", "no setting 'nope.max_steps'"),
        ("max_steps", "expected KEY=VALUE"),
        ("simcse.learning_rate=true", "learning_rate must be float"),
    ],
)
def test_bad_overrides_name_the_key(assignment, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(PipelineConfig(), [assignment])


def test_convert_rejects_a_bad_override_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["convert", "--model", str(tmp_path / "none"), "--out", str(out), "--set", "mntp.max_steps=-"]
    )
    assert result.exit_code == 1 and "max_steps must be int" in result.output, result.output
    assert not out.exists()


def test_short_runs_at_the_papers_rates_warn_and_cpu_rates_do_not():
    from decoder2vec.training.config import SimCSEConfig, check_stage

    with pytest.warns(UserWarning, match=r"simcse: 40 steps at learning rate 3e-05 will barely change"):
        check_stage(SimCSEConfig(max_steps=40), "simcse")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_stage(SimCSEConfig(max_steps=200, learning_rate=3e-3), "simcse")  # the cpu-1h budget
        check_stage(SimCSEConfig(), "simcse")  # the paper's own 1000 steps


@pytest.mark.parametrize(
    ("stage", "assignment"),
    [
        ("distill", "embedding_weight=inf"),
        ("distill", "similarity_weight=nan"),
        ("simcse", "attention_dropout=nan"),
        ("mntp", "lora.dropout=nan"),
        ("simcse", "matryoshka_weights=[1, .inf]"),
        ("mntp", "max_grad_norm=-.inf"),
    ],
)
def test_non_finite_settings_are_refused_naming_the_key(stage, assignment):
    """NaN passes every ``<``/``>`` range check, so each float setting (nested and in lists too) must be
    checked for finiteness itself, before anything loads."""
    from decoder2vec.training.config import STAGES, check_stage

    cfg = apply_overrides(STAGES[stage].config(), [assignment], prefix=stage)
    if stage == "simcse" and "matryoshka" in assignment:
        cfg.matryoshka_dims = [8, 4]
    key = assignment.split("=")[0].replace("[", r"\[")
    with pytest.raises(ConfigError, match=rf"{stage}\.{key}.*must be a finite number"):
        check_stage(cfg, stage)
