"""Checkpoint selection on a retrieval dev set: the best evaluation's weights are the stage's output,
exactly, also after a kill and a resume; a bad dev set fails before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from decoder2vec.errors import DataFormatError, SettingError
from decoder2vec.training import loop, run_mntp, run_simcse
from decoder2vec.training.config import LoraSettings, MNTPConfig, SimCSEConfig
from tests.training.conftest import SENTENCES


def make_dev(root: Path) -> Path:
    """A BEIR folder in the tiny word model's vocabulary: each query's passage is the next sentence."""
    (root / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "title": "", "text": s} for i, s in enumerate(SENTENCES)]
    queries = [{"_id": f"q{i}", "text": SENTENCES[i + 1]} for i in range(0, 12, 2)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    qrels = "".join(f"q{i}\td{i}\t1\n" for i in range(0, 12, 2))
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


def simcse_cfg(model: Path, corpus: Path, dev: Path, **overrides) -> SimCSEConfig:
    settings = {
        "model": str(model),
        "data": str(corpus),
        "max_steps": 6,
        "eval_every": 2,
        "save_every": 2,
        "keep_checkpoints": 3,
        "log_every": 1,
        "batch_size": 4,
        "learning_rate": 5e-3,
        "merge": False,
        "lora": LoraSettings(r=4, alpha=8, dropout=0.1),
        "retrieval_dev": str(dev),
        **overrides,
    }
    return SimCSEConfig(**settings)


class KnownScores:
    """Stands in for evaluate_retrieval: a fixed nDCG@10 per step (the step is the last finished step
    the loop's callback saw, plus one), and a check that it runs in eval mode (no dropout)."""

    def __init__(self, by_step: dict[int, float]) -> None:
        self.by_step, self.done, self.modes = by_step, 0, []

    def callback(self, step: int) -> None:
        self.done = step

    def __call__(self, encoder, data, **kwargs):
        self.modes.append(encoder.module.training)
        score = self.by_step[self.done + 1]
        return {"ndcg_at_10": score, "mrr_at_10": 0.0, "recall_at_10": 0.0, "recall_at_100": 0.0}


def canonical(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # module names (backbone.base_model.model.layers.0...lora_A.default.weight) and PEFT's saved names
    # (base_model.model.layers.0...lora_A.weight) share the part from "layers."
    return {k[k.index("layers.") :].replace(".default", ""): v for k, v in weights.items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return canonical(load_file(str(run / "adapter" / "adapter_model.safetensors")))


def checkpoint(run: Path, step: int) -> dict[str, torch.Tensor]:
    return canonical(load_file(str(run / f"checkpoint-{step:08d}" / "trainable.safetensors")))


SCORES = {2: 10.0, 4: 30.0, 6: 20.0}  # the best is step 4, not the last


def test_selection_keeps_the_best_steps_weights(tiny_word_llama, text_corpus, tmp_path, monkeypatch):
    fake = KnownScores(SCORES)
    monkeypatch.setattr("decoder2vec.evaluation.retrieval.evaluate_retrieval", fake)
    dev = make_dev(tmp_path / "dev")
    run = tmp_path / "run"
    result = run_simcse(simcse_cfg(tiny_word_llama, text_corpus, dev), run, callbacks=[fake.callback])
    assert fake.modes == [False, False, False]  # scored in eval mode: no dropout
    assert result.selected == {"metric": "ndcg_at_10", "score": 30.0, "step": 4}
    assert json.loads((run / "best" / "best.json").read_text())["step"] == 4
    assert_same(adapter(run), checkpoint(run, 4))
    assert_same(canonical(load_file(str(run / "best" / "trainable.safetensors"))), checkpoint(run, 4))
    last = checkpoint(run, 6)
    assert any(not torch.equal(last[k], v) for k, v in checkpoint(run, 4).items())  # the choice mattered
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(e["step"], e["eval_ndcg_at_10"], e["best_step"]) for e in logged if "eval_ndcg_at_10" in e] == [
        (2, 10.0, 2),
        (4, 30.0, 4),
        (6, 20.0, 4),
    ]


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["after step 5", "saving step 6"])
def test_a_killed_and_resumed_run_selects_the_same_best(
    where, tiny_word_llama, text_corpus, tmp_path, monkeypatch
):
    # "saving step 6": best/ already holds step 6 (the best) when the kill loses checkpoint 6; the resume
    # must start from checkpoint 4's best (step 4), replay step 6 and choose it again
    scores = SCORES if where == "after step 5" else {2: 10.0, 4: 30.0, 6: 50.0}
    dev = make_dev(tmp_path / "dev")
    cfg = simcse_cfg(tiny_word_llama, text_corpus, dev)
    straight = KnownScores(scores)
    monkeypatch.setattr("decoder2vec.evaluation.retrieval.evaluate_retrieval", straight)
    expected = run_simcse(cfg, tmp_path / "straight", callbacks=[straight.callback]).selected

    broken = KnownScores(scores)
    monkeypatch.setattr("decoder2vec.evaluation.retrieval.evaluate_retrieval", broken)
    if where == "after step 5":

        def crash(step: int) -> None:
            if step == 5:
                raise Crash

        callbacks = [broken.callback, crash]
    else:
        real_save = loop.save

        def save(acc, run_dir, step, *args, **kwargs):
            if step == 6:
                assert json.loads((run_dir / "best" / "best.json").read_text())["step"] == 6
                raise Crash
            return real_save(acc, run_dir, step, *args, **kwargs)

        monkeypatch.setattr(loop, "save", save)
        callbacks = [broken.callback]
    with pytest.raises(Crash):
        run_simcse(cfg, tmp_path / "broken", callbacks=callbacks)
    monkeypatch.undo()
    resumed = KnownScores(scores)
    monkeypatch.setattr("decoder2vec.evaluation.retrieval.evaluate_retrieval", resumed)
    resumed.done = 4  # the resume starts after checkpoint 4
    result = run_simcse(cfg, tmp_path / "broken", resume=True, callbacks=[resumed.callback])
    assert result.selected == expected
    assert_same(adapter(tmp_path / "broken"), adapter(tmp_path / "straight"))


def test_real_retrieval_scores_are_logged_for_mntp(tiny_word_llama, text_corpus, tmp_path):
    dev = make_dev(tmp_path / "dev")
    cfg = MNTPConfig(
        model=str(tiny_word_llama),
        data=str(text_corpus),
        max_seq_length=16,
        eval_fraction=0.2,
        batch_size=4,
        max_steps=2,
        eval_every=1,
        merge=False,
        learning_rate=5e-3,
        retrieval_dev=str(dev),
        retrieval_dev_max_queries=4,
        retrieval_dev_max_docs=10,
        select_metric="mrr_at_10",
        lora=LoraSettings(r=4, alpha=8),
    )
    result = run_mntp(cfg, tmp_path / "run")
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in logged if "eval_mrr_at_10" in e]
    assert [e["step"] for e in evals] == [1, 2] and all("eval_loss" in e for e in evals)  # MNTP's own too
    best = max(evals, key=lambda e: (e["eval_mrr_at_10"], -e["step"]))
    assert result.selected == {"metric": "mrr_at_10", "score": best["eval_mrr_at_10"], "step": best["step"]}
    assert 0 <= best["eval_mrr_at_10"] <= 100


def test_a_bad_dev_set_or_metric_fails_before_the_model_loads(text_corpus, tmp_path):
    dev = make_dev(tmp_path / "dev")
    (dev / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tmissing\t1\n")
    no_model = tmp_path / "no-model"
    with pytest.raises(DataFormatError, match=r"dev.tsv:2: corpus-id 'missing'"):
        run_simcse(simcse_cfg(no_model, text_corpus, dev), tmp_path / "run")
    with pytest.raises(SettingError, match="select_metric"):
        run_simcse(simcse_cfg(no_model, text_corpus, dev, select_metric="map"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_resume_that_skips_the_lost_best_evaluation_restores_the_checkpoints_best(
    tiny_word_llama, text_corpus, tmp_path, monkeypatch
):
    # best/ holds step 6 (the best) when the kill loses checkpoint 6; the resume evaluates only every 4
    # steps (eval_every may change on resume), so step 6 is never scored again: the outputs must be the
    # best the checkpoint knew (step 4), not the orphaned step-6 weights
    scores = {2: 10.0, 4: 30.0, 6: 50.0, 8: 20.0}
    cfg = simcse_cfg(tiny_word_llama, text_corpus, make_dev(tmp_path / "dev"), max_steps=8)
    first = KnownScores(scores)
    monkeypatch.setattr("decoder2vec.evaluation.retrieval.evaluate_retrieval", first)
    real_save = loop.save

    def save(acc, run_dir, step, *args, **kwargs):
        if step == 6:
            raise Crash
        return real_save(acc, run_dir, step, *args, **kwargs)

    monkeypatch.setattr(loop, "save", save)
    with pytest.raises(Crash):
        run_simcse(cfg, tmp_path / "run", callbacks=[first.callback])
    monkeypatch.undo()
    assert json.loads((tmp_path / "run" / "best" / "best.json").read_text())["step"] == 6
    resumed = KnownScores(scores)
    resumed.done = 4
    monkeypatch.setattr("decoder2vec.evaluation.retrieval.evaluate_retrieval", resumed)
    cfg.eval_every = 4
    result = run_simcse(cfg, tmp_path / "run", resume=True, callbacks=[resumed.callback])
    assert result.selected == {"metric": "ndcg_at_10", "score": 30.0, "step": 4}
    assert_same(adapter(tmp_path / "run"), checkpoint(tmp_path / "run", 4))
