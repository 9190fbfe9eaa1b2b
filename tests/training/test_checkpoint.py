"""Issue #22, items 1 and 7d: a checkpoint holds nothing that runs code when loaded, and a refused resume
names every difference at once."""

import os
import random
import stat
import warnings

import numpy as np
import pytest
import torch

from decoder2vec.training import checkpoint as ckpt
from decoder2vec.training import run_mntp
from decoder2vec.training.config import LoraSettings, MNTPConfig
from decoder2vec.training.errors import ResumeMismatchError, TrainingError


class Payload:
    """A pickle that creates ``marker`` when unpickled: a stand-in for an attacker's code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_state_round_trips_through_safetensors(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # numpy's cached Gaussian is part of its state
    state = ckpt.rng_state()
    ckpt.save_rng_state(state, tmp_path / "rng.safetensors")
    expected = draws()
    ckpt.set_rng_state(ckpt.load_rng_state(tmp_path / "rng.safetensors"))
    assert draws() == expected
    assert not (tmp_path / "rng.safetensors").read_bytes().startswith(b"\x80")  # not a pickle


@pytest.fixture()
def finished_run(tiny_word_llama, text_corpus, tmp_path):
    cfg = MNTPConfig(
        model=str(tiny_word_llama), data=str(text_corpus), max_seq_length=16, batch_size=4, max_steps=2,
        save_every=2, learning_rate=5e-3, merge=False, lora=LoraSettings(r=4, alpha=8),
    )  # fmt: skip
    run_mntp(cfg, tmp_path / "run")
    (last,) = ckpt.checkpoints(tmp_path / "run")
    return cfg, tmp_path / "run", last


def test_crafted_checkpoint_files_are_refused_without_running_them(finished_run, tmp_path):
    cfg, run, last = finished_run
    marker = tmp_path / "pwned"
    payload = torch.save  # torch's own pickler, as a real checkpoint file would be written
    saved = {p.name: p.read_bytes() for p in last.glob("rng_*")}
    rng = last / "rng_0.safetensors"

    # a pickled rng_0.pt (the format before) is never unpickled; the resume goes on without it
    for name in saved:
        (last / name).unlink()
    payload({"python": Payload(marker)}, last / "rng_0.pt")
    with pytest.warns(UserWarning, match=r"rng_0\.pt: an older pickled random-state file, not loaded"):
        run_mntp(cfg, run, resume=True)
    assert not marker.exists()
    assert list(saved) == ["rng_0.safetensors"]  # what a checkpoint now holds: tensors and JSON, no pickle

    # a pickle where the safetensors file belongs is refused, naming the file
    payload({"python": Payload(marker)}, rng)
    with pytest.raises(TrainingError, match=r"rng_0\.safetensors is not a random-state file"):
        run_mntp(cfg, run, resume=True)
    assert not marker.exists()

    # optimizer state: weights-only loading, and its refusal is one line of our own
    rng.write_bytes(saved["rng_0.safetensors"])
    payload({"state": Payload(marker)}, last / "optimizer.pt")
    with pytest.raises(TrainingError) as refused:
        run_mntp(cfg, run, resume=True)
    message = str(refused.value)
    assert "optimizer.pt" in message and "could run code" in message
    assert "\n" not in message and "weights_only" not in message
    assert not marker.exists()


def test_check_resumes_names_every_difference_of_every_run(tmp_path):
    saved = {
        "stage": "mntp",
        "world_size": 1,
        "recipe": {"learning_rate": 3e-4, "batch_size": 4, "log_every": 5},
    }
    for name in ("mntp", "simcse"):
        ckpt.write_run_file(tmp_path / name, {**saved, "stage": name})
    now = {"world_size": 2, "recipe": {"learning_rate": 1e-3, "batch_size": 4, "log_every": 1}}
    with pytest.raises(ResumeMismatchError) as refused:
        ckpt.check_resumes([(tmp_path / name, {**now, "stage": name}) for name in ("mntp", "simcse", "new")])
    lines = str(refused.value).splitlines()[1:]
    assert len(lines) == 4  # two differences in each started run; log_every does not change the weights
    for name in ("mntp", "simcse"):
        assert f"  {tmp_path / name}: recipe.learning_rate: 0.0003 (saved) vs 0.001 (now)" in lines
        assert f"  {tmp_path / name}: world_size: 1 (saved) vs 2 (now)" in lines
    ckpt.check_resumes([(tmp_path / name, {**saved, "stage": name}) for name in ("mntp", "simcse")])


def test_convert_resume_names_every_stage_difference_at_once(tiny_word_llama, text_corpus, tmp_path):
    from decoder2vec.training.config import load_pipeline
    from decoder2vec.training.pipeline import convert

    def pipeline():
        cfg = load_pipeline("demo")
        cfg.model = str(tiny_word_llama)
        for stage in (cfg.mntp, cfg.simcse):
            stage.data, stage.max_steps, stage.max_seq_length, stage.batch_size = str(text_corpus), 2, 16, 4
            stage.lora = LoraSettings(r=4, alpha=8)
        cfg.mntp.eval_every = 2
        return cfg

    out = tmp_path / "encoder"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the short-run warning
        convert(pipeline(), out)
        changed = pipeline()
        changed.mntp.learning_rate, changed.simcse.batch_size = 1e-3, 2
        metrics = {s: (out / "stages" / s / "metrics.jsonl").read_text() for s in ("mntp", "simcse")}
        with pytest.raises(ResumeMismatchError) as refused:
            convert(changed, out, resume=True)
        lines = str(refused.value).splitlines()  # one error, one line per difference
        assert any(
            "mntp" in line and "learning_rate: 0.0003 (saved) vs 0.001 (now)" in line for line in lines
        )
        assert any("simcse" in line and "batch_size: 4 (saved) vs 2 (now)" in line for line in lines)
        assert metrics == {s: (out / "stages" / s / "metrics.jsonl").read_text() for s in ("mntp", "simcse")}
        convert(pipeline(), out, resume=True)  # the unchanged settings still resume


def test_run_files_follow_the_umask(tiny_word_llama, text_corpus, tmp_path):
    """Issue #22, item 4: checkpoints and the adapter (safetensors writes 0600) get the umask's mode."""
    cfg = MNTPConfig(
        model=str(tiny_word_llama), data=str(text_corpus), max_seq_length=16, batch_size=4, max_steps=2,
        save_every=2, learning_rate=5e-3, merge=False, lora=LoraSettings(r=4, alpha=8),
    )  # fmt: skip
    old = os.umask(0o022)
    try:
        run_mntp(cfg, tmp_path / "run")
    finally:
        os.umask(old)
    paths = list((tmp_path / "run").rglob("*"))
    assert any(p.name == "adapter_model.safetensors" for p in paths)
    assert any(p.name == "trainable.safetensors" for p in paths)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


@pytest.mark.parametrize("planted", ["metrics.jsonl", "checkpoint"])
def test_resume_never_writes_through_a_planted_symlink(tiny_word_llama, text_corpus, tmp_path, planted):
    """#32: with metrics.jsonl replaced by a link to a file outside the run folder, a resume appended its
    JSON lines there. Every file a run appends to, rewrites or prunes must be its own, inside the folder:
    the resume is refused before any step, naming the link, and the outside file is untouched."""
    from decoder2vec.errors import OutputExistsError

    cfg = MNTPConfig(
        model=str(tiny_word_llama), data=str(text_corpus), max_seq_length=16, batch_size=4, max_steps=2,
        save_every=1, log_every=1, learning_rate=5e-3, merge=False, lora=LoraSettings(r=4, alpha=8),
    )  # fmt: skip
    run = tmp_path / "run"
    run_mntp(cfg, run)
    first, last = ckpt.checkpoints(run)
    import shutil

    shutil.rmtree(last)  # so the resume has a step to run (and a line to log)
    outside = tmp_path / "outside"
    if planted == "metrics.jsonl":
        outside.write_text("precious\n")
        (run / "metrics.jsonl").unlink()
        (run / "metrics.jsonl").symlink_to(outside)
    else:
        shutil.copytree(first, outside)
        shutil.rmtree(first)
        first.symlink_to(outside)
    before = {p: p.read_bytes() for p in ([outside] if outside.is_file() else outside.rglob("*"))}
    with pytest.raises(OutputExistsError, match=f"{planted}.* is a symbolic link"):
        run_mntp(cfg, run, resume=True)
    assert {p: p.read_bytes() for p in before} == before
    assert not ckpt.checkpoints(run)[-1:] or ckpt.checkpoints(run)[-1].name == first.name


def test_append_line_refuses_links_and_other_files(tmp_path):
    from decoder2vec.errors import OutputExistsError
    from decoder2vec.io import append_line

    append_line(tmp_path / "log.jsonl", "one", root=tmp_path)
    append_line(tmp_path / "log.jsonl", "two", root=tmp_path)
    assert (tmp_path / "log.jsonl").read_text() == "one\ntwo\n"
    (tmp_path / "link").symlink_to(tmp_path / "log.jsonl")
    with pytest.raises(OutputExistsError, match="symbolic link"):
        append_line(tmp_path / "link", "three", root=tmp_path)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputExistsError, match="not a plain file"):
        append_line(tmp_path / "fifo", "x", root=tmp_path)
    with pytest.raises(OutputExistsError, match="not inside"):
        append_line(tmp_path.parent / "elsewhere", "x", root=tmp_path)


def test_overwrite_removes_only_what_a_run_wrote(tiny_word_llama, text_corpus, tmp_path):
    """--overwrite removed the whole --out folder, a user's notes with it. Now it removes the previous
    run's files (run.json, metrics, checkpoints, adapter/) and leaves everything else, as convert does."""
    cfg = MNTPConfig(
        model=str(tiny_word_llama), data=str(text_corpus), max_seq_length=16, batch_size=4, max_steps=2,
        save_every=1, learning_rate=5e-3, merge=False, lora=LoraSettings(r=4, alpha=8),
    )  # fmt: skip
    run = tmp_path / "run"
    run_mntp(cfg, run)
    (run / "NOTES.md").write_text("mine")
    (run / "reports").mkdir()
    (run / "reports" / "a.txt").write_text("mine too")
    old_metrics = (run / "metrics.jsonl").read_text()
    cfg.max_steps, cfg.save_every = 1, 1
    run_mntp(cfg, run, overwrite=True)
    assert (run / "NOTES.md").read_text() == "mine" and (run / "reports" / "a.txt").read_text() == "mine too"
    assert [p.name for p in ckpt.checkpoints(run)] == ["checkpoint-00000001"]  # step 2's is gone
    assert (run / "metrics.jsonl").read_text() != old_metrics and (run / "adapter").is_dir()
    assert ckpt.is_run_entry("checkpoint-00000002") and not ckpt.is_run_entry("checkpoint-notes")
