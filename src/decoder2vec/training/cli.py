"""``decoder2vec train <stage>`` (the ``train_app`` group) and ``decoder2vec convert``.

Both are built from the stage registry (``stages.STAGES``) and each stage's flags here (:data:`STAGE_FLAGS`):
one ``train`` command per stage, with the flags every stage has plus its own, and ``convert``'s
``--<stage>-steps`` / ``--<stage>-data`` per stage. Flags override the recipe file (``--config``), which
overrides the paper defaults in ``settings.py``.
All commands run unchanged under ``accelerate launch`` / ``torchrun`` (DDP).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from decoder2vec.training.loading import apply_overrides, from_dict, load_pipeline, load_stage
from decoder2vec.training.stages import STAGES, StageSpec, run_stage

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", help="Recipe YAML file, or a shipped recipe name (e.g. llm2vec-llama)."),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder.")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model folder, GGUF file, alias or hub id.")]
STEPS_FLAGS = ("--steps", "--max-steps")
STEPS_HELP = "Optimizer steps (the LR schedule spans them)."
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Batch size per process.")]
LenOpt = Annotated[int | None, typer.Option("--max-seq-length", help="Tokens per sequence.")]
SeedOpt = Annotated[int | None, typer.Option("--seed")]
ADAPTER_HELP = "LoRA adapter folder to merge first (repeatable)."
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue from the newest checkpoint in --out, with the settings the run recorded."
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Replace a previous run in --out: the files a run writes; others there stay."
    ),
]
MERGE_HELP = "Also write the merged model / ready encoder."
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override any recipe setting, type-checked: --set max_steps=5, --set lora.r=8 (repeatable).",
    ),
]


@dataclass(frozen=True)
class CliOption:
    """A flag of ``decoder2vec train <stage>`` that sets the stage setting ``field``."""

    field: str
    flags: tuple[str, ...]
    type: Any
    help: str = ""


@dataclass(frozen=True)
class StageFlags:
    """A stage's command line: ``train <stage>``'s help and own flags, and its ``convert --<stage>-data``."""

    help: str  # `decoder2vec train <name>`'s help
    data_help: str
    convert_data_help: str
    options: tuple[CliOption, ...] = ()
    model_flags: tuple[str, ...] = ("--model",)
    model_help: str = "Model folder, GGUF file, alias or hub id."
    merge: bool | None = True  # default of --merge/--no-merge; None: no such flag
    output: str = "encoder"  # what the run's merged output is called in the command's report


_MINI_BATCH = CliOption(
    "mini_batch_size",
    ("--mini-batch-size",),
    int | None,
    "GradCache micro-batch size (same gradient, less memory).",
)

# One entry per registered stage (stages.STAGES).
STAGE_FLAGS: dict[str, StageFlags] = {
    "mntp": StageFlags(
        help="Masked next token prediction with LoRA on the bidirectional model.",
        data_help="Text/JSONL file or folder, 'wiki' (offline corpus) or hf:NAME.",
        convert_data_help="MNTP corpus (default: offline Wikipedia).",
        options=(
            CliOption("mask_strategy", ("--mask-strategy",), str | None, "bert or all_mask."),
            CliOption("mask_probability", ("--mask-probability",), float | None),
            CliOption("mask_token", ("--mask-token",), str | None, "blank ('_'), eos, pad or new."),
        ),
        merge=False,
        output="merged model",
    ),
    "simcse": StageFlags(
        help="Unsupervised SimCSE (pass the MNTP adapter with --adapter).",
        data_help="One sentence per line (.txt/.jsonl), or 'wiki'.",
        convert_data_help="SimCSE sentences (default: offline Wikipedia).",
        options=(_MINI_BATCH,),
    ),
    "supervised": StageFlags(
        help="Supervised contrastive learning with hard negatives (pass the MNTP adapter with --adapter).",
        data_help="JSONL of {query, positive, negatives, instruction, task}.",
        convert_data_help="Supervised JSONL; the stage runs only when given.",
        options=(_MINI_BATCH,),
    ),
    "distill": StageFlags(
        help="Distill an encoder into a smaller, faster student that gives the teacher's embeddings.",
        data_help="Unlabeled text: .txt/.jsonl file or folder, hf:NAME, or 'wiki' (article leads and their "
        "sentences).",
        convert_data_help="Distillation texts (default: offline Wikipedia leads and sentences).",
        options=(
            CliOption(
                "teacher",
                ("--teacher",),
                str | None,
                "Teacher: a decoder2vec encoder (folder, alias, GGUF) or a sentence-transformers folder.",
            ),
            CliOption(
                "student_layers",
                ("--student-layers",),
                int | None,
                "Keep only the student's first N decoder layers.",
            ),
            CliOption("distill_loss", ("--distill-loss",), str | None, "cosine or mse."),
            CliOption(
                "full_finetune",
                ("--full-finetune/--lora",),
                bool | None,
                "Train every weight but the input embeddings, or a LoRA (default).",
            ),
            CliOption(
                "projection",
                ("--projection/--no-projection",),
                bool | None,
                "A learned linear map after the student's pooling, saved with it (default: only when "
                "the widths differ).",
            ),
            CliOption("pooling", ("--pooling",), str | None, "Student pooling (default: the teacher's)."),
            _MINI_BATCH,
        ),
        model_flags=("--student",),
        model_help="Student: a decoder folder, GGUF, alias or hub id (default: the teacher's backbone).",
        merge=None,
    ),
}


def _overrides(cfg, **values) -> None:
    for key, value in values.items():
        if value is not None:
            setattr(cfg, key, list(value) if isinstance(value, (list, tuple)) else value)


def _train(spec: StageSpec, config, set_, out, resume: bool, overwrite: bool, **flags):
    """What every ``train`` command does: recipe file, then its flags, then ``--set``; run; report.

    ``--resume`` without ``--config`` starts from the settings the run in ``out`` recorded, so flags need
    not be repeated; any that are given must agree with them (the resume check names each difference)."""
    cfg = recorded_stage(spec, out) if resume and config is None else None
    if cfg is None:
        cfg = load_stage(spec.config, config, spec.name)
    _overrides(cfg, **flags)
    apply_overrides(cfg, set_, prefix=spec.name)
    result = run_stage(spec, cfg, out, resume=resume, overwrite=overwrite)
    lines = [f"adapter: {result.adapter}"] if result.adapter else []
    if result.merged:
        lines.append(f"{STAGE_FLAGS[spec.name].output}: {result.merged}")
    if result.selected:
        best = result.selected
        lines.append(
            f"selected: step {best['step']} ({best['metric']} {best['score']:.2f} on the retrieval dev set)"
        )
    _report("\n".join(lines))


def recorded_stage(spec: StageSpec, out: Path):
    """The settings of the ``spec`` run in ``out`` (its ``run.json``), or None when ``out`` holds no run."""
    from decoder2vec.training.checkpoint import recorded_recipe
    from decoder2vec.training.errors import SettingError

    found = recorded_recipe(Path(out).expanduser())
    if found is None:
        return None
    stage, recipe = found
    if stage != spec.name:
        raise SettingError(f"{out} holds a '{stage}' run, not '{spec.name}': resume it with `train {stage}`")
    return from_dict(spec.config, recipe, str(Path(out) / "run.json"))


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

        from decoder2vec.backbone.model_io import quiet_transformers
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


def _param(name: str, annotation, default=inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _command(function, params: list[inspect.Parameter], name: str, doc: str):
    """``function(**values)`` as a typer command with the flags ``params`` (typer reads the signature)."""
    function.__signature__ = inspect.Signature(params)
    function.__annotations__ = {p.name: p.annotation for p in params}
    function.__name__, function.__qualname__, function.__doc__ = name, name, doc
    return _friendly(function)


def stage_command(spec: StageSpec):
    """``decoder2vec train <stage>``: the flags every stage has, then the stage's own (:data:`STAGE_FLAGS`)."""
    own = STAGE_FLAGS[spec.name]
    fields: dict[str, str] = {}  # parameter -> stage setting
    params = [_param("out", OutOpt)]

    def option(name: str, field: str, kind, flags: tuple[str, ...], help: str | None, default=None) -> None:
        fields[name] = field
        params.append(_param(name, Annotated[kind, typer.Option(*flags, help=help)], default))

    option("model", "model", str | None, own.model_flags, own.model_help)
    params.append(_param("config", ConfigOpt, None))
    option("data", "data", str | None, ("--data",), own.data_help)
    option("steps", "max_steps", int | None, STEPS_FLAGS, STEPS_HELP)
    option("batch_size", "batch_size", int | None, ("--batch-size",), "Batch size per process.")
    option("max_seq_length", "max_seq_length", int | None, ("--max-seq-length",), "Tokens per sequence.")
    option("lr", "learning_rate", float | None, ("--lr", "--learning-rate"), "Peak learning rate.")
    for extra in own.options:
        option(extra.field, extra.field, extra.type, extra.flags, extra.help or None)
    option("adapter", "adapters", list[str] | None, ("--adapter",), ADAPTER_HELP)
    option("seed", "seed", int | None, ("--seed",), None)
    params += [_param("resume", ResumeOpt, False), _param("overwrite", OverwriteOpt, False)]
    if own.merge is not None:
        option("merge", "merge", bool, ("--merge/--no-merge",), MERGE_HELP, own.merge)
    params.append(_param("set_", SetOpt, None))

    def command(**values) -> None:
        config, set_, out = values.pop("config"), values.pop("set_"), values.pop("out")
        resume, overwrite = values.pop("resume"), values.pop("overwrite")
        settings = {fields[name]: value for name, value in values.items()}
        _train(spec, config, set_, out, resume, overwrite, **settings)

    return _command(command, params, spec.name, own.help)


train_app = typer.Typer(
    help=f"Train one stage ({', '.join(STAGES)}).",
    no_args_is_help=True,
)
for _spec in STAGES.values():
    train_app.command(_spec.name)(stage_command(_spec))


def _convert(**values) -> None:
    from decoder2vec.training.pipeline import convert as run_convert
    from decoder2vec.training.pipeline import recorded_pipeline

    out, config, model = values["out"], values["config"], values["model"]
    resume, overwrite, set_ = values["resume"], values["overwrite"], values["set_"]
    # --resume continues the run with the settings it recorded: flags need not be repeated, and any that
    # are given must agree with them (convert names every difference)
    corpus = [c.strip() for value in values["corpus"] or () for c in value.split(",") if c.strip()]
    recorded = recorded_pipeline(out) if resume and config is None else None
    cfg, source = recorded if recorded is not None else (load_pipeline(config, corpus), config)
    if model is not None:
        cfg.model = model
    if corpus:  # (a recorded conversion: must be the corpus it was started with; convert names a difference)
        cfg.pairs.sources = corpus
    for name in STAGES:
        stage = getattr(cfg, name)
        _overrides(stage, max_steps=values[f"{name}_steps"], data=values[f"{name}_data"])
        _overrides(
            stage,
            batch_size=values["batch_size"],
            max_seq_length=values["max_seq_length"],
            seed=values["seed"],
        )
    apply_overrides(cfg, set_)
    folder = run_convert(cfg, out, resume=resume, overwrite=overwrite, recipe_source=source)
    lines = [f"encoder: {folder}"]
    if cfg.pairs.sources:
        from decoder2vec.training.pipeline import RECORD, retrieval_table

        report = json.loads((Path(folder) / RECORD).read_text()).get("retrieval")
        lines += [retrieval_table(report)] if report else []
    _report("\n".join(lines))


def _convert_params() -> list[inspect.Parameter]:
    params = [_param("out", OutOpt), _param("model", ModelOpt, None), _param("config", ConfigOpt, None)]
    corpus = typer.Option(
        "--corpus",
        help="Documents for the data engine (repeatable or comma list; 'wiki': the offline leads' train "
        "split): retrieval pairs are built from them after SimCSE and train the supervised stage, with the "
        "'retrieval' recipe's pairs and supervised settings unless the recipe has its own.",
    )
    params.append(_param("corpus", Annotated[list[str] | None, corpus], None))
    for name in STAGES:
        params.append(_param(f"{name}_steps", Annotated[int | None, typer.Option(f"--{name}-steps")], None))
    params += [_param("batch_size", BatchOpt, None), _param("max_seq_length", LenOpt, None)]
    for name in STAGES:
        flag = typer.Option(f"--{name}-data", help=STAGE_FLAGS[name].convert_data_help)
        params.append(_param(f"{name}_data", Annotated[str | None, flag], None))
    params += [
        _param("seed", SeedOpt, None),
        _param("resume", ResumeOpt, False),
        _param("overwrite", OverwriteOpt, False),
        _param("set_", SetOpt, None),
    ]
    return params


convert = _command(
    _convert,
    _convert_params(),
    "convert",
    "Turn a decoder LLM into an encoder: bidirectional -> MNTP -> SimCSE (-> pairs from --corpus -> supervised) "
    "-> encoder folder. With --resume, continue the conversion in --out with its recorded settings.",
)
