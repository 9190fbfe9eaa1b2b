"""The loop's warning for a loss at chance level: contrastive steps report the loss their batch would have
if every text had the same embedding (ln of the candidates per query), and a loss back at it is named."""

import json
import logging
import math

import pytest
import torch

from decoder2vec.training import run_simcse
from decoder2vec.training.config import SimCSEConfig

BATCH = 4


def simcse(model, corpus, out, **settings) -> list[dict]:
    """A short SimCSE run on the tiny model (batch 4, every step logged); its logged windows."""
    cfg = SimCSEConfig(
        model=str(model),
        data=str(corpus),
        batch_size=BATCH,
        max_seq_length=16,
        max_steps=3,
        log_every=1,
        merge=False,
        **settings,
    )
    run_simcse(cfg, out)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_chance_loss_is_ln_of_the_in_batch_candidates(tiny_word_llama, text_corpus, tmp_path):
    """SimCSE: each sentence against the batch's 4 second views, so chance is ln 4 (math, not the loss
    function); with Matryoshka terms it is their weighted sum, 3 ln 4 + 1 ln 4."""
    rows = simcse(tiny_word_llama, text_corpus, tmp_path / "plain")
    assert [r["chance_loss"] for r in rows] == pytest.approx([math.log(BATCH)] * 3, rel=1e-5)
    rows = simcse(
        tiny_word_llama, text_corpus, tmp_path / "mrl", matryoshka_dims=[32, 8], matryoshka_weights=[3, 1]
    )
    assert [r["chance_loss"] for r in rows] == pytest.approx([4 * math.log(BATCH)] * 3, rel=1e-5)


def test_a_loss_at_chance_is_warned_about_once_naming_the_remedy(
    tiny_word_llama, text_corpus, tmp_path, caplog
):
    """A temperature so high that every similarity divides to ~0 keeps the softmax uniform: the loss sits
    at chance on every step, as in a collapse, and the run says so once, with the rate to lower."""
    with caplog.at_level(logging.WARNING, logger="decoder2vec.training.loop"):
        rows = simcse(tiny_word_llama, text_corpus, tmp_path / "flat", temperature=1e6, learning_rate=2e-3)
    assert all(r["loss"] >= 0.9 * r["chance_loss"] for r in rows)
    warnings = [r.getMessage() for r in caplog.records if "chance level" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "stage simcse, step 1" in warnings[0] and "learning_rate (now 0.002)" in warnings[0]


def test_a_learning_run_is_not_warned_about(tiny_word_llama, text_corpus, tmp_path, caplog):
    """The usual temperature: two dropout views of a sentence are far closer than other sentences, the
    loss is well under chance, and nothing is said."""
    with caplog.at_level(logging.WARNING, logger="decoder2vec.training.loop"):
        rows = simcse(tiny_word_llama, text_corpus, tmp_path / "ok", temperature=0.05)
    assert all(r["loss"] < 0.9 * r["chance_loss"] for r in rows), rows
    assert not [r for r in caplog.records if "chance level" in r.getMessage()]


def test_a_non_finite_loss_stops_the_run_before_anything_is_published(tiny_word_llama, text_corpus, tmp_path):
    """A positive, finite temperature so small that cosine / temperature overflows float32: the loss is
    NaN at step 1. The run stops with an error naming the step, saves no checkpoint and merges nothing."""
    from decoder2vec.errors import TrainingError

    out = tmp_path / "nan"
    cfg = SimCSEConfig(
        model=str(tiny_word_llama), data=str(text_corpus), batch_size=BATCH, max_seq_length=16,
        max_steps=2, log_every=1, save_every=1, merge=True, temperature=1e-300,
    )  # fmt: skip
    with pytest.raises(TrainingError, match="step 1: the loss is nan"):
        run_simcse(cfg, out)
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


# ------------------------------------------------------------------ bf16 autocast on CPU (opt-in)
def test_cpu_bf16_autocast_is_opt_in(monkeypatch):
    from decoder2vec.backbone import precision
    from decoder2vec.training import loop
    from decoder2vec.training.config import StageConfig
    from decoder2vec.training.errors import SettingError

    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    monkeypatch.setattr(precision, "cpu_kernels", lambda: {"bf16": "AMX-BF16", "int8": "AMX-INT8"})
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with loop.make_accelerator(StageConfig()).autocast():
        assert (a @ b).dtype == torch.float32  # the default stays fp32
    with loop.make_accelerator(StageConfig(dtype="bfloat16")).autocast():
        out = a @ b
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), a @ b, rtol=2e-2, atol=2e-2)
    with loop.make_accelerator(StageConfig()).autocast():  # a later fp32 stage in the same process
        assert (a @ b).dtype == torch.float32
    monkeypatch.setattr(precision, "cpu_kernels", lambda: {"bf16": None, "int8": None})
    with pytest.raises(SettingError, match="dtype=bfloat16 on this CPU would be emulated"):
        loop.make_accelerator(StageConfig(dtype="bfloat16"))
