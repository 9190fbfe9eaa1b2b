"""Distillation (issue #21): the loss, cutting a student to N layers, the teacher cache, training and resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from decoder2vec.training import run_distill
from decoder2vec.training.config import DistillConfig, LoraSettings
from decoder2vec.training.losses import distill_loss, matryoshka_loss
from decoder2vec.training.recipes.distill import TEACHER_CACHE
from tests.training.killing import run_until_killed

HELD_OUT = [
    "a green bird flows in the sea",
    "the old woman plays ball at night",
    "snow falls on the red house",
    "a fish eats bread in the river",
    "the man drives a new car to the city",
    "an apple is on the small tree",
    "the child reads a book in the rain",
    "a dog swims in the cold water",
]


# ------------------------------------------------------------------------------------------ the loss
def reference_loss(s, t, kind, w_emb, w_sim, tau):
    """Distillation loss written out element by element."""
    n = len(s)
    direct = 0.0
    for i in range(n):
        if kind == "cosine":
            direct += 1 - float(s[i] @ t[i]) / (float(s[i].norm()) * float(t[i].norm()))
        else:
            direct += float(((s[i] - t[i]) ** 2).sum()) / s.shape[1]
    direct /= n
    kl = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        cos = lambda x, a, b: float(x[a] @ x[b]) / (float(x[a].norm()) * float(x[b].norm()))
        zs = [math.exp(cos(s, i, j) / tau) for j in others]
        zt = [math.exp(cos(t, i, j) / tau) for j in others]
        ps = [z / sum(zs) for z in zs]
        pt = [z / sum(zt) for z in zt]
        kl += sum(p * math.log(p / q) for p, q in zip(pt, ps))
    return w_emb * direct + w_sim * kl / n


@pytest.mark.parametrize("kind", ["cosine", "mse"])
@pytest.mark.parametrize(("w_emb", "w_sim"), [(1.0, 1.0), (0.5, 0.0), (0.0, 2.0)])
def test_distill_loss_equals_a_hand_written_reference(kind, w_emb, w_sim):
    gen = torch.Generator().manual_seed(0)
    s, t = (
        torch.randn(5, 8, generator=gen, dtype=torch.float64),
        torch.randn(5, 8, generator=gen, dtype=torch.float64),
    )
    got = distill_loss(s, t, kind=kind, embedding_weight=w_emb, similarity_weight=w_sim, temperature=0.5)
    assert float(got) == pytest.approx(reference_loss(s, t, kind, w_emb, w_sim, 0.5), rel=1e-5)
    # Matryoshka: the sum of the losses of the prefixes
    fn = lambda a, b: distill_loss(
        a, b, kind=kind, embedding_weight=w_emb, similarity_weight=w_sim, temperature=0.5
    )
    nested = matryoshka_loss(fn, (s, t), [8, 4])
    expected = reference_loss(s, t, kind, w_emb, w_sim, 0.5) + reference_loss(
        s[:, :4], t[:, :4], kind, w_emb, w_sim, 0.5
    )
    assert float(nested) == pytest.approx(expected, rel=1e-5)


def test_distill_loss_is_zero_for_the_teacher_itself_and_takes_other_widths():
    t = torch.randn(6, 16)
    assert float(distill_loss(t.clone(), t)) == pytest.approx(0.0, abs=1e-6)
    # the similarity term alone compares batches of different widths
    assert float(distill_loss(torch.randn(6, 8), t, embedding_weight=0.0)) > 0


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def teacher(tiny_model_factory, tmp_path_factory) -> Path:
    """A 4-layer tiny encoder folder (Encoder.save) with the word vocabulary."""
    from decoder2vec import Encoder
    from tests.conftest import WORD_LLAMA

    model = tiny_model_factory("llama", vocab_size=128, num_hidden_layers=4, **WORD_LLAMA)
    folder = tmp_path_factory.mktemp("teacher") / "encoder"
    Encoder.from_pretrained(model, pooling="mean").save(folder)
    return folder


def config(teacher: Path, corpus: Path, **overrides) -> DistillConfig:
    settings = {
        "teacher": str(teacher),
        "student_layers": 2,
        "data": str(corpus),
        "max_steps": 6,
        "batch_size": 8,
        "max_seq_length": 16,
        "learning_rate": 3e-3,
        "save_every": 2,
        "log_every": 1,
        "lora": LoraSettings(r=4, alpha=8, dropout=0.1),
    }
    return DistillConfig(**{**settings, **overrides})


def teacher_cosine(student: Path, teacher: Path, texts: list[str]) -> float:
    from decoder2vec import Encoder

    a = torch.from_numpy(Encoder.from_pretrained(student).encode(texts))
    b = torch.from_numpy(Encoder.from_pretrained(teacher).encode(texts))
    return float(F.cosine_similarity(a, b).mean())


# ------------------------------------------------------------------------------------------ the student
def test_cutting_keeps_the_lower_layers_exactly(teacher, tmp_path):
    from decoder2vec import Encoder
    from decoder2vec.backbone.layers import truncate_layers
    from decoder2vec.backbone.loading import load_backbone

    full, tok = load_backbone(teacher)
    cut, _ = load_backbone(teacher)
    truncate_layers(cut, 2)
    assert cut.config.num_hidden_layers == 2 and len(cut.layers) == 2
    whole, kept = full.state_dict(), cut.state_dict()
    assert set(kept) == {k for k in whole if not k.startswith(("layers.2.", "layers.3."))}
    for key, value in kept.items():
        assert torch.equal(value, whole[key]), key
    # ... and it saves and reloads as a 2-layer model with the same weights
    Encoder(cut, tok).save(tmp_path / "cut")
    reloaded = Encoder.from_pretrained(tmp_path / "cut").model
    assert reloaded.config.num_hidden_layers == 2
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, whole[key]), key


def test_a_student_moves_towards_its_teacher(teacher, text_corpus, tmp_path):
    """Cut to half its layers, the student's embeddings of unseen texts get closer to the teacher's."""
    from decoder2vec import Encoder
    from decoder2vec.backbone.layers import truncate_layers
    from decoder2vec.backbone.loading import load_backbone

    model, tok = load_backbone(teacher)
    Encoder(truncate_layers(model, 2), tok).save(tmp_path / "pruned")
    before = teacher_cosine(tmp_path / "pruned", teacher, HELD_OUT)

    cfg = config(teacher, text_corpus, max_steps=30, full_finetune=True, learning_rate=2e-3, save_every=30)
    result = run_distill(cfg, tmp_path / "run")
    assert result.adapter is None and result.merged == tmp_path / "run" / "encoder"
    after = teacher_cosine(result.merged, teacher, HELD_OUT)
    assert after > before + 0.02, (before, after)

    record = json.loads((result.merged / "recipe.json").read_text())
    assert record["teacher"] == str(teacher) and record["student_layers"] == 2
    assert record["config"]["full_finetune"] is True and record["metrics"]["step"] == 30
    # distillation has no chance level (its loss against fixed teacher rows), so it logs none
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows and not [r for r in rows if "chance_loss" in r]
    student = Encoder.from_pretrained(result.merged)
    assert student.model.config.num_hidden_layers == 2 and student.pooling == "mean"


def test_the_teacher_cache_equals_fresh_teacher_encodes_and_a_resume_reuses_it(
    teacher, text_corpus, tmp_path, monkeypatch
):
    from decoder2vec import Encoder
    from decoder2vec.training.data.corpus import read_distill_texts
    from decoder2vec.training.recipes import distill

    cfg = config(teacher, text_corpus, max_steps=2, save_every=1, learning_rate=5e-3)
    run_distill(cfg, tmp_path / "run")
    cache = tmp_path / "run" / TEACHER_CACHE
    texts = read_distill_texts(cfg.data)
    needed = distill.visited_indices(len(texts), cfg.batch_size, cfg.seed, cfg.max_steps)
    assert 0 < len(needed) <= 2 * cfg.batch_size
    cached = np.concatenate([load_file(str(p))["embeddings"].numpy() for p in sorted(cache.glob("part-*"))])
    fresh = Encoder.from_pretrained(teacher, max_length=16).encode([texts[i] for i in needed])
    np.testing.assert_allclose(cached, fresh, atol=1e-5)

    # a resumed (longer-lived) run reads the cache: the teacher is never loaded again
    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded although its embeddings are cached")

    monkeypatch.setattr(distill, "load_teacher", no_teacher)
    for checkpoint in sorted((tmp_path / "run").glob("checkpoint-*"))[1:]:
        import shutil

        shutil.rmtree(checkpoint)  # back to step 1
    run_distill(cfg, tmp_path / "run", resume=True)


def test_a_sentence_transformers_teacher_gives_the_same_embeddings(teacher, tmp_path):
    import shutil

    from decoder2vec import Encoder
    from decoder2vec.encoder_config import ENCODER_CONFIG
    from decoder2vec.training.recipes.distill import describe_teacher, load_teacher

    st_folder = tmp_path / "st"
    shutil.copytree(teacher, st_folder)
    (st_folder / ENCODER_CONFIG).unlink()  # now only sentence-transformers' files describe it
    info = describe_teacher(str(st_folder))
    assert info.kind == "sentence-transformers"
    got = load_teacher(info, 16, torch.device("cpu"))(HELD_OUT)
    expected = Encoder.from_pretrained(teacher, max_length=16).encode(HELD_OUT)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_the_teacher_width_counts_its_projection(tiny_llama, tmp_path):
    """A teacher with a projection after pooling embeds in the projection's width: the teacher's description,
    its spec and the vectors it gives agree (the description used to give the backbone's hidden size)."""
    from decoder2vec import Encoder
    from decoder2vec.spec import EncoderSpec
    from decoder2vec.training.recipes.distill import describe_teacher, load_teacher

    encoder = Encoder.from_pretrained(tiny_llama)
    encoder.projection = np.random.default_rng(0).standard_normal((12, 32)).astype(np.float32)
    encoder.save(tmp_path / "teacher")
    teacher = describe_teacher(str(tmp_path / "teacher"))
    vectors = load_teacher(teacher, 16, torch.device("cpu"))(HELD_OUT)
    assert teacher.width == EncoderSpec.read(tmp_path / "teacher").width == vectors.shape[1] == 12


# ------------------------------------------------------------------------------------------ the projection
def test_the_least_squares_start_is_ridge_regression():
    from sklearn.linear_model import Ridge

    from decoder2vec.training.recipes.distill import least_squares_projection

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 12)), rng.standard_normal((40, 7))
    lam = 0.05 * np.trace(x.T @ x) / 12
    expected = Ridge(alpha=lam, fit_intercept=False).fit(x, y).coef_  # (7, 12), as nn.Linear stores it
    np.testing.assert_allclose(least_squares_projection(x, y, ridge=0.05), expected, rtol=1e-4, atol=1e-6)
    # fewer texts than dimensions still solve (the ridge term keeps the system well-posed)
    assert np.isfinite(least_squares_projection(x[:5], y[:5])).all()


def test_a_projected_student_starts_at_the_least_squares_map(teacher, text_corpus, tmp_path):
    """projection=True on the same-width cut: the map starts as ridge regression from the cut's pooled
    vectors to the cached teacher rows (at a vanishing learning rate it stays there), and is saved."""
    from decoder2vec import Encoder
    from decoder2vec.backbone.layers import truncate_layers
    from decoder2vec.backbone.loading import load_backbone
    from decoder2vec.training.data.corpus import read_distill_texts
    from decoder2vec.training.recipes.distill import FIT_TEXTS, least_squares_projection, visited_indices

    cfg = config(teacher, text_corpus, projection=True, max_steps=2, learning_rate=1e-12, full_finetune=True)
    result = run_distill(cfg, tmp_path / "run")
    texts = read_distill_texts(cfg.data)
    seen = [texts[i] for i in visited_indices(len(texts), cfg.batch_size, cfg.seed, cfg.max_steps)][
        :FIT_TEXTS
    ]
    model, tok = load_backbone(teacher)
    pruned = Encoder(truncate_layers(model, 2), tok, max_length=16).encode(seen)
    expected = least_squares_projection(pruned, Encoder.from_pretrained(teacher, max_length=16).encode(seen))
    student = Encoder.from_pretrained(result.merged)
    np.testing.assert_allclose(student.projection, expected, atol=1e-5)
    assert json.loads((result.merged / "recipe.json").read_text())["projection"] == "32 -> 32 after pooling"


def test_a_student_of_another_width_learns_through_a_projection(
    teacher, text_corpus, tiny_model_factory, tmp_path
):
    """A 48-wide student of the 32-wide teacher: a projection by default; training moves it closer."""
    from decoder2vec import Encoder
    from tests.conftest import WORD_LLAMA

    wide = tiny_model_factory("llama", vocab_size=128, hidden_size=48, num_hidden_layers=2, **WORD_LLAMA)
    common = {"model": str(wide), "student_layers": None, "full_finetune": True}
    start = run_distill(
        config(teacher, text_corpus, max_steps=1, learning_rate=1e-12, **common), tmp_path / "a"
    )
    trained = run_distill(
        config(teacher, text_corpus, max_steps=30, learning_rate=2e-3, save_every=30, **common),
        tmp_path / "b",
    )
    student = Encoder.from_pretrained(trained.merged)
    assert student.embedding_dim == 32 and student.projection.shape == (32, 48)
    before = teacher_cosine(start.merged, teacher, HELD_OUT)
    after = teacher_cosine(trained.merged, teacher, HELD_OUT)
    assert after > before + 0.02, (before, after)


# ------------------------------------------------------------------------------------------ resume
class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_is_exact(teacher, text_corpus, tmp_path, monkeypatch):
    """LoRA dropout, GradCache micro-batches and the similarity term: every piece of the step in one run.
    The resume takes the trained projection from its checkpoint without refitting the start."""
    cfg = config(
        teacher, text_corpus, mini_batch_size=3, matryoshka_dims=[32, 16], distill_loss="mse", projection=True
    )
    run_distill(cfg, tmp_path / "straight")

    def crash(step):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        run_distill(cfg, tmp_path / "broken", callbacks=[crash])
    assert (tmp_path / "broken" / TEACHER_CACHE).is_dir()  # kept: the run has a checkpoint
    assert not (tmp_path / "broken" / "encoder").exists()

    def no_refit(*args):
        raise AssertionError("the least-squares start was refitted on resume")

    monkeypatch.setattr("decoder2vec.training.recipes.distill.least_squares_projection", no_refit)
    run_distill(cfg, tmp_path / "broken", resume=True)
    a = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "broken" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the saved encoders agree too (LoRA merged into the cut student)
    for name in ("model.safetensors", "2_Dense/model.safetensors"):  # (and their projections)
        x = load_file(str(tmp_path / "straight" / "encoder" / name))
        y = load_file(str(tmp_path / "broken" / "encoder" / name))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


def test_resume_after_sigkill_is_exact(teacher, text_corpus, tmp_path):
    cfg = config(teacher, text_corpus, full_finetune=True)
    run_distill(cfg, tmp_path / "straight")
    run_until_killed(cfg, "distill", tmp_path / "killed", step=5)
    run_distill(cfg, tmp_path / "killed", resume=True)
    a = load_file(str(tmp_path / "straight" / "encoder" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "encoder" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_fails_before_anything_is_written(
    teacher, text_corpus, tiny_model_factory, tmp_path, monkeypatch
):
    from decoder2vec.errors import ModelLoadError
    from decoder2vec.training.errors import CorpusError, SettingError, TrainingError
    from decoder2vec.training.recipes import distill
    from tests.conftest import WORD_LLAMA

    out = tmp_path / "out"
    with pytest.raises(SettingError, match="student_layers = 9: the student .* has 4 decoder layers"):
        run_distill(config(teacher, text_corpus, student_layers=9), out)
    with pytest.raises(ModelLoadError, match="the teacher does not load"):
        run_distill(config(tmp_path / "no-such-teacher", text_corpus), out)
    with pytest.raises(SettingError, match="needs a teacher"):
        run_distill(config("", text_corpus), out)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(CorpusError, match="empty"):
        run_distill(config(teacher, empty), out)
    wide = tiny_model_factory("llama", vocab_size=128, hidden_size=48, **WORD_LLAMA)
    with pytest.raises(SettingError, match=r"without a projection \(--no-projection\) the direct term"):
        run_distill(config(teacher, text_corpus, model=str(wide), student_layers=None, projection=False), out)
    with pytest.raises(SettingError, match=r"matryoshka_dims \[48\] exceed the embedding width 32"):
        run_distill(
            config(teacher, text_corpus, model=str(wide), student_layers=None, matryoshka_dims=[48]), out
        )
    with pytest.raises(SettingError, match="distill_loss"):
        run_distill(config(teacher, text_corpus, distill_loss="kl"), out)
    monkeypatch.setattr(distill, "add_lora", lambda model, *args, **kwargs: model.requires_grad_(False))
    with pytest.raises(TrainingError, match="no trainable parameters"):
        run_distill(config(teacher, text_corpus), out)
    assert not out.exists()


def test_a_run_failing_before_its_first_checkpoint_leaves_nothing(teacher, text_corpus, tmp_path):
    def crash(step):
        raise Crash

    with pytest.raises(Crash):
        run_distill(config(teacher, text_corpus, save_every=5), tmp_path / "run", callbacks=[crash])
    assert not (tmp_path / "run").exists()  # the teacher cache went with the run file


def test_the_train_distill_command(teacher, text_corpus, tmp_path):
    from typer.testing import CliRunner

    from decoder2vec import Encoder
    from decoder2vec.cli import app

    out = tmp_path / "student"
    flags = [
        "--teacher",
        str(teacher),
        "--student-layers",
        "1",
        "--data",
        str(text_corpus),
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(
        app,
        ["train", "distill", *flags, "--steps", "2", "--batch-size", "4", "--lr", "5e-3", "--full-finetune"],
    )
    assert result.exit_code == 0, result.output
    assert f"encoder: {out / 'encoder'}" in result.output and "adapter:" not in result.output
    assert Encoder.from_pretrained(out / "encoder").model.config.num_hidden_layers == 1
    bad = CliRunner().invoke(
        app, ["train", "distill", *flags[:2], "--student-layers", "7", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 1 and "has 4 decoder layers" in bad.output
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_ddp_distillation_matches_one_process_with_the_full_batch(teacher, text_corpus, tmp_path):
    """Two gloo processes, batch 4 each: the same losses and weights as one process with batch 8 (the
    teacher cache is written by the main process and read by both; the similarity term spans both)."""
    import os
    import subprocess
    import sys
    import textwrap

    root = Path(__file__).resolve().parents[2]
    settings = {"teacher": str(teacher), "data": str(text_corpus), "max_steps": 2, "save_every": 100}
    settings |= {"student_layers": 2, "max_seq_length": 16, "learning_rate": 1e-2, "log_every": 1}
    worker = tmp_path / "worker.py"
    worker.write_text(
        textwrap.dedent(f"""
        from decoder2vec.training.config import DistillConfig, LoraSettings
        from decoder2vec.training.distributed import end_distributed
        from decoder2vec.training import run_distill
        cfg = DistillConfig(**{settings!r}, batch_size=4, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
        run_distill(cfg, {str(tmp_path / "ddp")!r})
        end_distributed()
    """)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(worker),
    ]
    proc = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=400, env=env, cwd=root
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    run_distill(
        DistillConfig(**settings, batch_size=8, lora=LoraSettings(r=4, alpha=8, dropout=0.0)),
        tmp_path / "single",
    )
    losses = [
        [json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("ddp", "single")
    ]
    assert len(losses[0]) == 2 and max(abs(x - y) for x, y in zip(*losses)) < 1e-4, losses
    ddp = load_file(str(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors"))
    single = load_file(str(tmp_path / "single" / "adapter" / "adapter_model.safetensors"))
    moved = torch.cat([v.flatten() for k, v in single.items() if "lora_B" in k]).abs().mean().item()
    diff = torch.cat([(ddp[k] - single[k]).flatten() for k in ddp]).abs().mean().item()
    assert moved > 1e-3 and diff < 0.02 * moved, (diff, moved)


def test_selection_on_a_retrieval_dev_set_saves_the_best_students_weights(
    teacher, text_corpus, tmp_path, monkeypatch
):
    from decoder2vec import Encoder
    from tests.training.test_selection import KnownScores, make_dev

    fake = KnownScores({1: 10.0, 2: 40.0, 3: 20.0, 4: 30.0})
    monkeypatch.setattr("decoder2vec.evaluation.retrieval.evaluate_retrieval", fake)
    dev = make_dev(tmp_path / "dev")
    cfg = config(teacher, text_corpus, max_steps=4, eval_every=1, projection=True, retrieval_dev=str(dev))
    result = run_distill(cfg, tmp_path / "run", callbacks=[fake.callback])
    assert result.selected == {"metric": "ndcg_at_10", "score": 40.0, "step": 2}
    assert fake.modes == [False] * 4
    best = load_file(str(tmp_path / "run" / "best" / "trainable.safetensors"))
    (key,) = [k for k in best if "projection" in k]
    saved = Encoder.from_pretrained(tmp_path / "run" / "encoder").projection
    assert torch.equal(torch.from_numpy(saved), best[key])
    last = load_file(str(tmp_path / "run" / "checkpoint-00000004" / "trainable.safetensors"))
    assert not torch.equal(last[key], best[key])  # step 2's projection, not the last one
