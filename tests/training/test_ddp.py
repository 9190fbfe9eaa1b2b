"""Two gloo processes with batch 2 each reach the weights of one process with batch 4."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from decoder2vec.training import run_simcse, run_supervised
from decoder2vec.training.losses import simcse_loss

from .ddp_worker import configs

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ddp_matches_single_process_full_batch(tiny_word_llama, text_corpus, pairs_file, tmp_path):
    args = [str(tiny_word_llama), str(text_corpus), str(pairs_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(Path(__file__).with_name("ddp_worker.py")),
            *args,
            str(tmp_path / "ddp"),
            "2",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = (tmp_path / "ddp" / "supervised" / "checkpoint-00000002" / "trainer_state.json").read_text()
    assert '"world_size": 2' in state

    simcse, supervised = configs(*args, batch_size=4)
    run_simcse(simcse, tmp_path / "single" / "simcse")
    run_supervised(supervised, tmp_path / "single" / "supervised")
    # the gathered loss and its gradient equal the single-process full-batch ones
    got = json.loads((tmp_path / "ddp" / "grad.json").read_text())
    torch.manual_seed(0)
    weight = torch.randn(5, 3, requires_grad=True)
    x_a, x_b = torch.randn(8, 3), torch.randn(8, 3)
    loss = simcse_loss(x_a @ weight.T, x_b @ weight.T, 0.1)
    loss.backward()
    assert abs(got["loss"] - loss.item()) < 1e-5
    assert torch.allclose(torch.tensor(got["grad"]), weight.grad, atol=1e-5)

    for stage in ("simcse", "supervised"):
        # same loss at every step (the global batch and its negatives are the same)...
        ddp_loss = [
            json.loads(x)["loss"]
            for x in (tmp_path / "ddp" / stage / "metrics.jsonl").read_text().splitlines()
        ]
        one_loss = [
            json.loads(x)["loss"]
            for x in (tmp_path / "single" / stage / "metrics.jsonl").read_text().splitlines()
        ]
        assert len(ddp_loss) == 2 and max(abs(x - y) for x, y in zip(ddp_loss, one_loss)) < 1e-4, (
            ddp_loss,
            one_loss,
        )
        # ... and the same weights
        ddp = load_file(str(tmp_path / "ddp" / stage / "adapter" / "adapter_model.safetensors"))
        single = load_file(str(tmp_path / "single" / stage / "adapter" / "adapter_model.safetensors"))
        assert ddp.keys() == single.keys()
        # LoRA B starts at zero, so |B| is how far training moved the weights
        moved = torch.cat([v.flatten() for k, v in single.items() if "lora_B" in k]).abs().mean().item()
        assert moved > 1e-3
        # Adam divides by |g|, so gradient elements at float-noise level can flip sign and move a few
        # weights by ~lr; compare the typical difference against the typical movement instead of the max.
        diff = torch.cat([(ddp[k] - single[k]).flatten() for k in ddp]).abs().mean().item()
        assert diff < 0.02 * moved, (stage, diff, moved)


@pytest.mark.slow
def test_train_command_runs_under_torchrun(tiny_word_llama, text_corpus, tmp_path):
    """The documented multi-process CPU launch: both ranks train, only rank 0 prints the result paths."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "decoder2vec.cli", "train", "simcse", "--out", str(out), "--model", str(tiny_word_llama),
            "--data", str(text_corpus), "--steps", "2", "--batch-size", "2", "--max-seq-length", "16",
            "--no-merge",
        ],
        check=False, capture_output=True, text=True, timeout=400, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("adapter: ") == 1, proc.stdout
    state = json.loads((out / "checkpoint-00000002" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 2
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
