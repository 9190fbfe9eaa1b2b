"""A run killed mid-way and resumed ends with exactly the weights of an uninterrupted run."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from decoder2vec.training import run_mntp, run_simcse, run_supervised
from decoder2vec.training.config import LoraSettings, MNTPConfig, SimCSEConfig, SupervisedConfig
from tests.training.killing import run_until_killed


class Crash(RuntimeError):
    pass


def crash_at(k):
    def callback(step):
        if step == k:
            raise Crash(f"injected crash after step {k}")

    return callback


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def assert_same(a, b):
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k


def configs(tiny_word_llama, text_corpus, pairs_file):
    common = {
        "model": str(tiny_word_llama),
        "max_steps": 6,
        "save_every": 2,
        "log_every": 1,
        "learning_rate": 5e-3,
        "merge": False,
        "lora": LoraSettings(r=4, alpha=8, dropout=0.1),
    }
    return {
        "mntp": (
            run_mntp,
            MNTPConfig(data=str(text_corpus), max_seq_length=16, batch_size=4, eval_every=3, **common),
        ),
        # attention dropout + LoRA dropout + GradCache: every source of randomness in one run
        "simcse": (
            run_simcse,
            SimCSEConfig(
                data=str(text_corpus), batch_size=6, mini_batch_size=4, attention_dropout=0.3, **common
            ),
        ),
        "supervised": (
            run_supervised,
            SupervisedConfig(data=str(pairs_file), batch_size=4, mini_batch_size=3, warmup_steps=2, **common),
        ),
    }


@pytest.mark.parametrize("stage", ["mntp", "simcse", "supervised"])
def test_resume_after_crash_matches_uninterrupted(stage, tiny_word_llama, text_corpus, pairs_file, tmp_path):
    run, cfg = configs(tiny_word_llama, text_corpus, pairs_file)[stage]
    run(cfg, tmp_path / "straight")
    with pytest.raises(Crash):
        run(cfg, tmp_path / "broken", callbacks=[crash_at(3)])  # step 3 is lost: last checkpoint is step 2
    assert not (tmp_path / "broken" / "adapter").exists()
    run(cfg, tmp_path / "broken", resume=True)
    assert_same(weights(tmp_path / "straight"), weights(tmp_path / "broken"))
    # ... and the data order and RNG really matter: a different seed ends elsewhere
    cfg.seed += 1
    run(cfg, tmp_path / "other")
    assert any(
        not torch.equal(a, b)
        for a, b in zip(weights(tmp_path / "straight").values(), weights(tmp_path / "other").values())
    )


def test_resume_after_sigkill(tiny_word_llama, text_corpus, tmp_path):
    cfg = configs(tiny_word_llama, text_corpus, text_corpus)["mntp"][1]
    run_mntp(cfg, tmp_path / "straight")
    run_until_killed(cfg, "mntp", tmp_path / "killed", step=5)
    assert sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-*")) == [
        "checkpoint-00000002",
        "checkpoint-00000004",
    ]
    run_mntp(cfg, tmp_path / "killed", resume=True)
    assert_same(weights(tmp_path / "straight"), weights(tmp_path / "killed"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_from_another_recipe_or_model_is_refused(tiny_word_llama, text_corpus, tmp_path):
    from decoder2vec.training.errors import OutputExistsError, ResumeMismatchError

    cfg = configs(tiny_word_llama, text_corpus, text_corpus)["mntp"][1]
    cfg.max_steps = 2
    run_mntp(cfg, tmp_path / "run")
    before = snapshot(tmp_path / "run")

    cfg.learning_rate = 1e-4
    with pytest.raises(ResumeMismatchError, match=r"learning_rate: 0.005 \(saved\) vs 0.0001 \(now\)"):
        run_mntp(cfg, tmp_path / "run", resume=True)
    cfg.learning_rate = 5e-3
    other_model = tmp_path / "other-model"
    other_model.symlink_to(tiny_word_llama)
    cfg.model = str(other_model)
    with pytest.raises(ResumeMismatchError, match="model:"):
        run_mntp(cfg, tmp_path / "run", resume=True)
    with pytest.raises(OutputExistsError, match="--resume"):
        run_mntp(cfg, tmp_path / "run")
    assert snapshot(tmp_path / "run") == before  # nothing overwritten

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="holds no training run"):
        run_mntp(cfg, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"


def test_bad_input_fails_before_writing(tiny_word_llama, text_corpus, tmp_path):
    from decoder2vec.training.errors import BatchSizeError, CorpusError, TrainingError

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(CorpusError, match="empty"):
        run_mntp(MNTPConfig(model=str(tiny_word_llama), data=str(empty)), tmp_path / "a")
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text('{"text": ""}\n')
    with pytest.raises(CorpusError):
        run_mntp(MNTPConfig(model=str(tiny_word_llama), data=str(tiny)), tmp_path / "b")
    with pytest.raises(BatchSizeError, match="batch size 1000 is larger than the data set"):
        run_simcse(
            SimCSEConfig(model=str(tiny_word_llama), data=str(text_corpus), batch_size=1000), tmp_path / "c"
        )
    with pytest.raises(TrainingError, match="needs data"):
        run_supervised(SupervisedConfig(model=str(tiny_word_llama)), tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_gradient_checkpointing_gives_the_same_training(tiny_word_llama, text_corpus, pairs_file, tmp_path):
    """The GPU default (activation checkpointing, recomputed in backward with the stashed RNG state)
    trains exactly like the plain path, dropout and GradCache included."""
    run, cfg = configs(tiny_word_llama, text_corpus, pairs_file)["simcse"]
    cfg.max_steps = 2
    cfg.gradient_checkpointing = False
    run(cfg, tmp_path / "plain")
    cfg.gradient_checkpointing = True
    run(cfg, tmp_path / "checkpointed")
    plain, checkpointed = weights(tmp_path / "plain"), weights(tmp_path / "checkpointed")
    assert plain.keys() == checkpointed.keys()
    for k in plain:
        assert torch.allclose(plain[k], checkpointed[k], atol=1e-6), k
