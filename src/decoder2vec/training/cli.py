"""``decoder2vec train mntp|simcse|supervised`` (the ``train_app`` group) and ``decoder2vec convert``.

Flags override the recipe file (``--config``), which overrides the paper defaults in ``config.py``.
All commands run unchanged under ``accelerate launch`` / ``torchrun`` (DDP).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Annotated

import typer

from decoder2vec.training.config import (
    MNTPConfig,
    SimCSEConfig,
    SupervisedConfig,
    apply_overrides,
    load_pipeline,
    load_stage,
)

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", help="Recipe YAML file, or a shipped recipe name (e.g. llm2vec-llama)."),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder.")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model folder, GGUF file, alias or hub id.")]
StepsOpt = Annotated[
    int | None, typer.Option("--steps", "--max-steps", help="Optimizer steps (the LR schedule spans them).")
]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Batch size per process.")]
LenOpt = Annotated[int | None, typer.Option("--max-seq-length", help="Tokens per sequence.")]
LrOpt = Annotated[float | None, typer.Option("--lr", "--learning-rate", help="Peak learning rate.")]
SeedOpt = Annotated[int | None, typer.Option("--seed")]
AdapterOpt = Annotated[
    list[str] | None, typer.Option("--adapter", help="LoRA adapter folder to merge first (repeatable).")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a previous run in --out.")]
MergeOpt = Annotated[
    bool, typer.Option("--merge/--no-merge", help="Also write the merged model / ready encoder.")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override any recipe setting, type-checked: --set max_steps=5, --set lora.r=8 (repeatable).",
    ),
]
MiniOpt = Annotated[
    int | None,
    typer.Option("--mini-batch-size", help="GradCache micro-batch size (same gradient, less memory)."),
]


def _overrides(cfg, **values) -> None:
    for key, value in values.items():
        if value is not None:
            setattr(cfg, key, list(value) if isinstance(value, (list, tuple)) else value)


def _run_stage(stage: str, cls, config, set_, out, resume: bool, overwrite: bool, merged_label: str, **flags):
    """What every ``train`` command does: recipe file, then its flags, then ``--set``; run; report."""
    from decoder2vec.training.recipes.pipeline import RUNNERS

    cfg = load_stage(cls, config, stage)
    _overrides(cfg, **flags)
    apply_overrides(cfg, set_, prefix=stage)
    result = RUNNERS[stage](cfg, out, resume=resume, overwrite=overwrite)
    _report(f"adapter: {result.adapter}" + (f"\n{merged_label}: {result.merged}" if result.merged else ""))


def _report(text: str) -> None:
    """Print the result paths once, from the main process (every DDP rank returns them)."""
    from decoder2vec.training.distributed import world

    if world()[0] == 0:
        typer.echo(text)


def _friendly(fn):
    """Log training progress at INFO, and report expected failures like the main CLI (one ``error:``
    line, exit code 1; ``DECODER2VEC_DEBUG=1`` re-raises)."""
    from decoder2vec.cli_common import reports_errors

    @functools.wraps(fn)
    def with_logging(*args, **kwargs):
        import warnings

        from decoder2vec.cli_common import quiet_transformers
        from decoder2vec.training.distributed import end_distributed

        quiet_transformers()
        # peft reads a property transformers 5 deprecated; the warning is about their code, not the run.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        result = fn(*args, **kwargs)
        end_distributed()  # only after success: a failed rank's peers may still be inside a collective
        return result

    return reports_errors(with_logging)


train_app = typer.Typer(
    help="Train one LLM2Vec stage (MNTP, unsupervised SimCSE, supervised contrastive).",
    no_args_is_help=True,
)


@train_app.command("mntp")
@_friendly
def mntp(
    out: OutOpt,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="Text/JSONL file or folder, 'wiki' (offline corpus) or hf:NAME."),
    ] = None,
    steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    max_seq_length: LenOpt = None,
    lr: LrOpt = None,
    mask_strategy: Annotated[str | None, typer.Option("--mask-strategy", help="bert or all_mask.")] = None,
    mask_probability: Annotated[float | None, typer.Option("--mask-probability")] = None,
    mask_token: Annotated[
        str | None, typer.Option("--mask-token", help="blank ('_'), eos, pad or new.")
    ] = None,
    adapter: AdapterOpt = None,
    seed: SeedOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    merge: MergeOpt = False,
    set_: SetOpt = None,
) -> None:
    """Masked next token prediction with LoRA on the bidirectional model."""
    _run_stage(
        "mntp",
        MNTPConfig,
        config,
        set_,
        out,
        resume,
        overwrite,
        "merged model",
        model=model,
        data=data,
        max_steps=steps,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        learning_rate=lr,
        mask_strategy=mask_strategy,
        mask_probability=mask_probability,
        mask_token=mask_token,
        adapters=adapter,
        seed=seed,
        merge=merge,
    )


@train_app.command("simcse")
@_friendly
def simcse(
    out: OutOpt,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    data: Annotated[
        str | None, typer.Option("--data", help="One sentence per line (.txt/.jsonl), or 'wiki'.")
    ] = None,
    steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    max_seq_length: LenOpt = None,
    lr: LrOpt = None,
    mini_batch_size: MiniOpt = None,
    adapter: AdapterOpt = None,
    seed: SeedOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    merge: MergeOpt = True,
    set_: SetOpt = None,
) -> None:
    """Unsupervised SimCSE (pass the MNTP adapter with --adapter)."""
    _run_stage(
        "simcse",
        SimCSEConfig,
        config,
        set_,
        out,
        resume,
        overwrite,
        "encoder",
        model=model,
        data=data,
        max_steps=steps,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        learning_rate=lr,
        mini_batch_size=mini_batch_size,
        adapters=adapter,
        seed=seed,
        merge=merge,
    )


@train_app.command("supervised")
@_friendly
def supervised(
    out: OutOpt,
    data: Annotated[
        str | None,
        typer.Option("--data", help="JSONL of {query, positive, negatives, instruction, task}."),
    ] = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    max_seq_length: LenOpt = None,
    lr: LrOpt = None,
    mini_batch_size: MiniOpt = None,
    adapter: AdapterOpt = None,
    seed: SeedOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    merge: MergeOpt = True,
    set_: SetOpt = None,
) -> None:
    """Supervised contrastive learning with hard negatives (pass the MNTP adapter with --adapter)."""
    _run_stage(
        "supervised",
        SupervisedConfig,
        config,
        set_,
        out,
        resume,
        overwrite,
        "encoder",
        model=model,
        data=data,
        max_steps=steps,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        learning_rate=lr,
        mini_batch_size=mini_batch_size,
        adapters=adapter,
        seed=seed,
        merge=merge,
    )


@_friendly
def convert(
    out: OutOpt,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    mntp_steps: Annotated[int | None, typer.Option("--mntp-steps")] = None,
    simcse_steps: Annotated[int | None, typer.Option("--simcse-steps")] = None,
    supervised_steps: Annotated[int | None, typer.Option("--supervised-steps")] = None,
    batch_size: BatchOpt = None,
    max_seq_length: LenOpt = None,
    mntp_data: Annotated[
        str | None, typer.Option("--mntp-data", help="MNTP corpus (default: offline Wikipedia).")
    ] = None,
    simcse_data: Annotated[
        str | None, typer.Option("--simcse-data", help="SimCSE sentences (default: offline Wikipedia).")
    ] = None,
    supervised_data: Annotated[
        str | None,
        typer.Option("--supervised-data", help="Supervised JSONL; the stage runs only when given."),
    ] = None,
    seed: SeedOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    set_: SetOpt = None,
) -> None:
    """Turn a decoder LLM into an encoder: bidirectional -> MNTP -> SimCSE (-> supervised) -> encoder folder."""
    from decoder2vec.training.recipes.pipeline import convert as run_convert

    cfg = load_pipeline(config)
    if model is not None:
        cfg.model = model
    _overrides(cfg.mntp, max_steps=mntp_steps, data=mntp_data)
    _overrides(cfg.simcse, max_steps=simcse_steps, data=simcse_data)
    _overrides(cfg.supervised, max_steps=supervised_steps, data=supervised_data)
    for stage in (cfg.mntp, cfg.simcse, cfg.supervised):
        _overrides(stage, batch_size=batch_size, max_seq_length=max_seq_length, seed=seed)
    apply_overrides(cfg, set_)
    folder = run_convert(cfg, out, resume=resume, overwrite=overwrite, recipe_source=config)
    _report(f"encoder: {folder}")
