"""A training run killed with SIGKILL mid-way, in a child process: what the resume tests resume from."""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch


def run_until_killed(cfg, stage: str, out: Path, step: int) -> None:
    """Train ``stage`` (its registry name) on ``cfg`` into ``out`` in a child process that SIGKILLs itself
    when ``step`` ends (no cleanup, no atexit: what a kill -9 or an OOM kill leaves)."""
    settings = {**cfg.__dict__, "lora": dict(vars(cfg.lora))}  # plain values, so repr() round-trips
    script = textwrap.dedent(f"""
        import os, signal
        import torch
        torch.set_num_threads({torch.get_num_threads()})  # bitwise equality needs the same reduction order
        from decoder2vec.training.config import {type(cfg).__name__} as Config, LoraSettings
        from decoder2vec.training.stages import run_stage
        cfg = Config(**{settings!r})
        cfg.lora = LoraSettings(**cfg.lora)
        def kill(step):
            if step == {step}:
                os.kill(os.getpid(), signal.SIGKILL)
        run_stage({stage!r}, cfg, {str(out)!r}, callbacks=[kill])
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
