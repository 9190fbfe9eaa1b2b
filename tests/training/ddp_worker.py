"""Run under ``torchrun``: the contrastive stages with DDP (gloo on CPU). Used by test_ddp.py."""

import sys

from decoder2vec.training import run_simcse, run_supervised
from decoder2vec.training.config import LoraSettings, SimCSEConfig, SupervisedConfig


def configs(model: str, sentences: str, pairs: str, batch_size: int):
    common = {
        "model": model,
        "max_steps": 2,
        "learning_rate": 1e-2,
        "log_every": 1,
        "save_every": 100,
        "merge": False,
        "lora": LoraSettings(r=4, alpha=8, dropout=0.0),
        "batch_size": batch_size,
    }
    return (
        SimCSEConfig(data=sentences, attention_dropout=0.0, **common),
        # GradCache micro-batches and false-negative filtering across processes
        SupervisedConfig(data=pairs, mini_batch_size=1, warmup_steps=1, **common),
    )


def gradient_check(out: str) -> None:
    """In-batch negatives gathered with gradients, loss x world size, DDP-style gradient mean: the result
    must be the full-batch gradient (checked by the test against a single-process computation)."""
    import json

    import torch
    import torch.distributed as dist

    from decoder2vec.training.distributed import gather_with_grad, world
    from decoder2vec.training.losses import simcse_loss

    rank, size = world()
    torch.manual_seed(0)
    weight = torch.randn(5, 3, requires_grad=True)
    x_a, x_b = torch.randn(8, 3), torch.randn(8, 3)  # the global batch, identical on every rank
    rows = slice(rank * 4, (rank + 1) * 4)
    a, b = x_a[rows] @ weight.T, x_b[rows] @ weight.T
    loss = simcse_loss(gather_with_grad(a), gather_with_grad(b), 0.1) * size
    loss.backward()
    dist.all_reduce(weight.grad)
    weight.grad /= size  # what DDP does
    if rank == 0:
        with open(f"{out}/grad.json", "w") as f:
            json.dump({"loss": loss.item() / size, "grad": weight.grad.tolist()}, f)


if __name__ == "__main__":
    model, sentences, pairs, out, batch_size = sys.argv[1:6]
    import os

    os.makedirs(out, exist_ok=True)
    simcse, supervised = configs(model, sentences, pairs, int(batch_size))
    run_simcse(simcse, f"{out}/simcse")
    run_supervised(supervised, f"{out}/supervised")
    gradient_check(out)
    from decoder2vec.training.distributed import end_distributed

    end_distributed()
