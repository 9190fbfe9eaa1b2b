"""Stage and pipeline configuration: dataclasses with the paper's defaults, loadable from YAML recipes."""

from __future__ import annotations

import dataclasses
import importlib
import math
import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decoder2vec.pairs.settings import PairsSettings
from decoder2vec.training.errors import SettingError, TrainingError


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # LoRA only in the last N decoder layers (None: all). The backward pass then stops at the first
    # adapted layer, so a step costs less: a speed lever for CPU budgets.
    top_layers: int | None = None


@dataclass
class StageConfig:
    """Knobs every stage shares. ``model`` is a folder, GGUF, alias or hub id; ``adapters`` are LoRA folders
    merged into it (in order) before this stage adds its own fresh LoRA."""

    model: str = "smollm2-135m"
    adapters: list[str] = field(default_factory=list)
    data: str = "wiki"
    text_field: str = "text"
    max_seq_length: int = 512
    batch_size: int = 32  # per process; the global batch is batch_size x world size
    max_steps: int = 1000
    learning_rate: float = 5e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora: LoraSettings = field(default_factory=LoraSettings)
    seed: int = 42
    log_every: int = 10
    save_every: int = 200
    keep_checkpoints: int = 2
    # None: on a GPU only when the estimated activations would not fit (training/memory.py); off on CPU
    gradient_checkpointing: bool | None = None
    dtype: str | None = (
        None  # None: bf16 autocast on GPUs that have it, fp32 on CPU (bfloat16: autocast there too)
    )
    merge: bool = True  # also write the base model with this stage's adapter merged in
    eval_every: int = 100  # steps between evaluations (0: only at the end); they also run at the end
    # Checkpoint selection on a retrieval dev set (a BEIR folder, docs/evaluation.md): scored every
    # eval_every steps and at the end; the best step's trainable weights are kept in the run's best/ and
    # are what the stage saves. The split, the instruction prepended to queries, and a subsample that bounds
    # each evaluation's cost (every judged document of the kept queries stays in the corpus).
    retrieval_dev: str | None = None
    retrieval_dev_split: str | None = None
    retrieval_dev_instruction: str | None = None
    retrieval_dev_max_queries: int | None = None
    retrieval_dev_max_docs: int | None = None
    select_metric: str = "ndcg_at_10"  # ndcg_at_10, mrr_at_10, recall_at_10 or recall_at_100


# the selection settings; a run without retrieval_dev leaves them out of its identity (see recipes/common.py)
SELECTION_KEYS = (
    "retrieval_dev",
    "retrieval_dev_split",
    "retrieval_dev_instruction",
    "retrieval_dev_max_queries",
    "retrieval_dev_max_docs",
    "select_metric",
)


@dataclass
class MNTPConfig(StageConfig):
    mask_strategy: str = "bert"  # bert (80/10/10) or all_mask
    mask_probability: float | None = None  # None: 0.2 for bert, 0.8 for all_mask
    mask_token: str = "blank"  # blank ('_'), eos, pad or new (<mask>)
    eval_fraction: float = 0.01
    eval_batches: int = 8


@dataclass
class ContrastiveConfig(StageConfig):
    pooling: str = "mean"
    mini_batch_size: int | None = None  # GradCache micro-batch; None embeds the whole batch at once
    # Matryoshka: the loss is also taken on these nested prefixes of the embedding (e.g. [576, 256, 128, 64])
    # and summed, so truncating to one of them keeps most of the quality. Empty: the full width only.
    matryoshka_dims: list[int] = field(default_factory=list)
    # One weight per Matryoshka dimension (default 1 each, as sentence-transformers' MatryoshkaLoss); a
    # larger weight on the full width trades a little of the small prefixes for the full vector's quality.
    matryoshka_weights: list[float] = field(default_factory=list)


@dataclass
class SimCSEConfig(ContrastiveConfig):
    max_seq_length: int = 128
    batch_size: int = 128
    learning_rate: float = 3e-5
    temperature: float = 0.05
    attention_dropout: float = 0.3
    min_words: int = 4


@dataclass
class SupervisedConfig(ContrastiveConfig):
    data: str = ""
    max_seq_length: int = 512
    batch_size: int = 64
    learning_rate: float = 2e-4
    warmup_steps: int = 300
    temperature: float = 0.02
    num_negatives: int = 1
    symmetric_tasks: list[str] = field(default_factory=list)
    filter_false_negatives: bool = True


@dataclass
class DistillConfig(ContrastiveConfig):
    """Distillation: a student encoder learns to give a teacher encoder's embeddings, on unlabeled text.

    ``model`` is the student: any decoder decoder2vec loads, or ``""`` for the teacher's own backbone;
    ``student_layers`` keeps only its first N decoder layers (a smaller, faster student that starts from the
    teacher's lower layers). The loss is ``embedding_weight`` x (1 - cosine, or MSE) between each student and
    teacher embedding, plus ``similarity_weight`` x KL(teacher || student) of the in-batch similarity
    distributions (softmax of cosine / ``temperature`` over the other texts of the batch).

    ``projection`` puts a learned linear map after the student's pooling, initialised by least squares
    (student pooled vectors -> teacher embeddings on the first cached texts) and trained with the student;
    it is saved with it (sentence-transformers' Dense). None: only when the widths differ (and the direct
    term is on); True: also for a student as wide as the teacher, e.g. the teacher cut to N layers, whose
    layer-N space is not the teacher's (a least-squares map alone lifts such a cut's cosine to the teacher
    from 0.04 to 0.77, BENCHMARKS.md).
    """

    model: str = ""
    teacher: str = ""  # a decoder2vec encoder (folder, alias, GGUF) or a sentence-transformers folder
    student_layers: int | None = None
    pooling: str | None = None  # None: the teacher's (a decoder2vec encoder's), else mean
    distill_loss: str = "cosine"  # cosine or mse
    embedding_weight: float = 1.0
    # The similarity term is a regularizer: at weight 1 it outweighs the direct term and slowed the student's
    # approach to the teacher in the tiny-model tests (tests/training/test_distill.py); 0.1 helped there.
    similarity_weight: float = 0.1
    temperature: float = 0.05  # the shipped encoder's SimCSE temperature: the similarities it was shaped at
    full_finetune: bool = False  # train every weight but the input embeddings instead of a LoRA
    projection: bool | None = None  # a learned map after pooling; None: only when the widths differ
    min_words: int = 4  # the wiki corpus: sentences shorter than this are dropped
    max_seq_length: int = 128
    batch_size: int = 32
    learning_rate: float = 1e-4


@dataclass
class PairsConfig(PairsSettings):
    """``convert``'s data engine: ``decoder2vec pairs`` settings (docs/pairs.md) with the defaults of the
    shipped ``retrieval`` recipe. Empty ``sources`` (``--corpus``): off. ``generator`` ``""`` is the
    pipeline's model; ``filter_model``/``miner`` ``"current"`` is the encoder the stages before
    ``supervised`` made. ``threads``, ``progress`` and ``encode_batch_size`` do not change the pairs (a
    resume may change them); ``overwrite`` is convert's own flag, not a setting."""

    sources: list[str] = field(default_factory=list)
    generator: str = ""
    templates: list[str] = field(default_factory=lambda: ["question", "keywords"])
    structural: list[str] = field(
        default_factory=lambda: ["title", "first_sentence", "neighbour", "title_document"]
    )
    negatives: int = 3


# ---------------------------------------------------------------------------------------- the stage registry
@dataclass(frozen=True)
class CliOption:
    """A flag of ``decoder2vec train <stage>`` that sets the stage setting ``field``."""

    field: str
    flags: tuple[str, ...]
    type: Any
    help: str = ""


@dataclass(frozen=True)
class StageSpec:
    """Everything the package knows about one training stage.

    :data:`STAGES` is the one list of stages: the pipeline settings (:class:`PipelineConfig`), recipe files,
    ``convert`` and its input checks, the ``train`` commands and ``convert``'s per-stage flags are all read
    from it, so a new stage is a config class, a recipe module and one entry there.
    """

    name: str
    config: type  # the settings dataclass
    runner: str  # "module:function": (cfg, out_dir, *, resume, overwrite, callbacks) -> StageResult
    # (cfg, pipeline | None) -> None: read the data and check what can be checked before any model loads
    check_inputs: Callable[[Any, Any], None]
    help: str  # `decoder2vec train <name>`'s help
    data_help: str
    convert_data_help: str
    options: tuple[CliOption, ...] = ()
    model_flags: tuple[str, ...] = ("--model",)
    model_help: str = "Model folder, GGUF file, alias or hub id."
    merge: bool | None = True  # default of --merge/--no-merge; None: no such flag
    output: str = "encoder"  # what the run's merged output is called in the command's report
    cpu_rate: str = "1e-3"  # a learning rate measured to work for short CPU runs (the short-run warning)
    in_default_pipeline: bool = True
    optional: bool = False  # convert skips the stage (and records why) when it has no data
    # convert: True, the stage trains the pipeline's model with the previous stages' adapters merged in;
    # False, it turns the encoder made so far into another model and must come last (distill).
    continues_pipeline: bool = True

    def run(self, cfg, out_dir, **kwargs):
        module, _, function = self.runner.partition(":")
        return getattr(importlib.import_module(module), function)(cfg, out_dir, **kwargs)


def _check_texts(cfg: StageConfig, pipeline=None) -> None:
    from decoder2vec.training.data.corpus import read_texts

    read_texts(cfg.data, cfg.text_field)


def _check_sentences(cfg: SimCSEConfig, pipeline=None) -> None:
    from decoder2vec.training.data.corpus import read_sentences

    read_sentences(cfg.data, cfg.text_field, cfg.min_words)


def _check_pairs(cfg: SupervisedConfig, pipeline=None) -> None:
    from decoder2vec.training.data.pairs import read_pairs

    read_pairs(cfg.data, cfg.num_negatives, tuple(cfg.symmetric_tasks))


def _check_distill(cfg: DistillConfig, pipeline=None) -> None:
    from decoder2vec.training.recipes.distill import check_inputs

    check_inputs(cfg, pipeline)


_MINI_BATCH = CliOption(
    "mini_batch_size",
    ("--mini-batch-size",),
    int | None,
    "GradCache micro-batch size (same gradient, less memory).",
)

STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            "mntp",
            MNTPConfig,
            "decoder2vec.training.recipes.mntp:run_mntp",
            _check_texts,
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
            cpu_rate="3e-4",
        ),
        StageSpec(
            "simcse",
            SimCSEConfig,
            "decoder2vec.training.recipes.simcse:run_simcse",
            _check_sentences,
            help="Unsupervised SimCSE (pass the MNTP adapter with --adapter).",
            data_help="One sentence per line (.txt/.jsonl), or 'wiki'.",
            convert_data_help="SimCSE sentences (default: offline Wikipedia).",
            options=(_MINI_BATCH,),
            cpu_rate="3e-3",
        ),
        StageSpec(
            "supervised",
            SupervisedConfig,
            "decoder2vec.training.recipes.supervised:run_supervised",
            _check_pairs,
            help="Supervised contrastive learning with hard negatives (pass the MNTP adapter with --adapter).",
            data_help="JSONL of {query, positive, negatives, instruction, task}.",
            convert_data_help="Supervised JSONL; the stage runs only when given.",
            options=(_MINI_BATCH,),
            optional=True,
        ),
        StageSpec(
            "distill",
            DistillConfig,
            "decoder2vec.training.recipes.distill:run_distill",
            _check_distill,
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
            in_default_pipeline=False,
            continues_pipeline=False,
        ),
    )
}

PipelineConfig = dataclasses.make_dataclass(
    "PipelineConfig",
    [
        ("model", str, field(default="smollm2-135m")),
        ("pooling", str, field(default="mean")),
        *((name, spec.config, field(default_factory=spec.config)) for name, spec in STAGES.items()),
        ("pairs", PairsConfig, field(default_factory=PairsConfig)),
        # an STS-B file (sts-dev.csv layout) scored before and after the supervised stage; None: skipped
        ("sts_dev", str | None, field(default=None)),
        (
            "stages",
            list[str],
            field(default_factory=lambda: [n for n, s in STAGES.items() if s.in_default_pipeline]),
        ),
    ],
)
PipelineConfig.__module__ = __name__
PipelineConfig.__doc__ = """``convert``'s settings: one section per registered stage, and the ``stages`` to run.

bidirectional -> MNTP -> SimCSE (-> supervised when it has data) by default; each stage starts from the
previous enabled stage's merged weights. ``distill`` may come last: the encoder made so far is then the
teacher, and the result is the student (see ``training/recipes/pipeline.py``). ``pairs.sources`` (``--corpus``)
turns the data engine on: the supervised stage then trains on the pairs built from them."""


def _type_ok(value: Any, annotation: Any) -> bool:
    """Does ``value`` fit ``annotation`` (int, float, str, bool, X | None, list[str])? YAML gives the
    plain types; an int is accepted for a float, a bool is never taken for a number."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if annotation is Any:
        return True
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def from_dict(cls, data: dict[str, Any] | None, where: str = "recipe"):
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses.

    Unknown keys and values of the wrong type (``max_steps: "10"``) are errors naming the key and ``where``
    (the recipe file)."""
    data = dict(data or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise SettingError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(names)})")
    kwargs = {}
    for key, value in data.items():
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise SettingError(f"{where}: {key} must be a mapping, got {value!r}")
            value = from_dict(annotation, value, f"{where}.{key}")
        elif not _type_ok(value, annotation):
            raise SettingError(
                f"{where}: {key} must be {_type_name(annotation)}, got {type(value).__name__} {value!r}"
            )
        elif annotation is float or (typing.get_origin(annotation) and float in typing.get_args(annotation)):
            value = float(value) if isinstance(value, int) else value
        kwargs[key] = value
    return cls(**kwargs)


def apply_overrides(cfg, assignments: list[str] | None, prefix: str | None = None):
    """Apply ``--set key=value`` overrides (``mntp.max_steps=5``, ``lora.r=8``) to ``cfg`` in place.

    Values are parsed as YAML scalars and type-checked like recipe values, so a flag can never hold
    what a recipe could not. ``prefix`` (a stage name) may be left out of a stage command's keys.
    """
    for assignment in assignments or ():
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise SettingError(f"--set {assignment!r}: expected KEY=VALUE, e.g. mntp.max_steps=5")
        path = key.strip().split(".")
        if prefix is not None and path[0] == prefix and len(path) > 1:
            path = path[1:]
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        target = cfg
        for name in path[:-1]:
            if not dataclasses.is_dataclass(target) or not hasattr(target, name):
                raise SettingError(f"--set {assignment!r}: no setting {key.strip()!r}")
            target = getattr(target, name)
        if not dataclasses.is_dataclass(target):
            raise SettingError(f"--set {assignment!r}: no setting {key.strip()!r}")
        # YAML reads "3e-3" as a string and "123" as a number; also try the float and the raw text, so
        # `--set simcse.learning_rate=3e-3` and `--set mntp.data=123` mean what they say.
        candidates = [value]
        try:
            candidates.append(float(text))
        except ValueError:
            pass
        candidates.append(text)
        error = None
        for candidate in candidates:
            try:
                checked = from_dict(type(target), {path[-1]: candidate}, f"--set {key.strip()}")
            except SettingError as exc:
                error = error or exc
                continue
            setattr(target, path[-1], getattr(checked, path[-1]))
            break
        else:
            raise error
    return cfg


# Learning rate x steps below which a LoRA stage barely moves the model. The paper's stages sit at
# 0.03-0.05 (e.g. SimCSE 3e-5 x 1000 steps of batch 128); 40 steps at the paper's rates give 0.001.
SHORT_RUN_BUDGET = 0.01
# Rates measured to work for short CPU runs (BENCHMARKS.md: the SimCSE sweep and the cpu-1h budget).
CPU_RATES = {name: spec.cpu_rate for name, spec in STAGES.items()}


def short_run_warning(cfg: StageConfig, stage: str) -> str | None:
    """A warning when ``cfg`` is far too short for its learning rate to change the model (or None)."""
    budget = cfg.learning_rate * cfg.max_steps
    if budget >= SHORT_RUN_BUDGET:
        return None
    cpu_rate = CPU_RATES.get(stage, "1e-3")
    if cfg.learning_rate < float(cpu_rate):
        fix = f"raise the rate (e.g. --set {stage}.learning_rate={cpu_rate})"
    else:  # already at the measured CPU rate: suggesting it again would be no advice
        fix = f"run more steps (about {math.ceil(SHORT_RUN_BUDGET / cfg.learning_rate)} at this rate)"
    return (
        f"{stage}: {cfg.max_steps} steps at learning rate {cfg.learning_rate:g} will barely change the model "
        f"(learning rate x steps = {budget:.2g}; the paper's recipes assume about 1000 steps). For short CPU "
        f"runs {fix} or see BENCHMARKS.md for CPU budgets"
    )


def _float_settings(cfg, prefix: str = "") -> list[tuple[str, float]]:
    """Every float setting of a (nested) stage config as ``(dotted key, value)``, list items included:
    one place to refuse NaN and infinity, whichever way (recipe, ``--set``, flag) a value arrived."""
    found = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            found += _float_settings(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            found.append((f"{prefix}{f.name}", value))
        elif isinstance(value, list | tuple):
            found += [(f"{prefix}{f.name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, float)]
    return found


def check_stage(cfg: StageConfig, stage: str) -> None:
    """Reject impossible settings before any model is loaded or anything is written; warn about
    settings that are possible but will not do what the user expects (see :func:`short_run_warning`)."""

    def bad(key: str, value: Any, need: str) -> SettingError:
        return SettingError(f"{stage}.{key} = {value!r}: {need}")

    for key, value in _float_settings(cfg):  # first: NaN passes every `<` / `>` test below
        if not math.isfinite(value):
            raise bad(key, value, "must be a finite number")
    for key in ("max_steps", "batch_size", "max_seq_length", "log_every", "save_every"):
        value = getattr(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(key, value, "must be a positive integer")
    if cfg.max_seq_length < 8:
        raise bad("max_seq_length", cfg.max_seq_length, "must be at least 8 tokens")
    if not cfg.learning_rate > 0:
        raise bad("learning_rate", cfg.learning_rate, "must be positive")
    if cfg.warmup_steps < 0 or cfg.weight_decay < 0 or cfg.max_grad_norm < 0:
        raise bad("warmup_steps/weight_decay/max_grad_norm", None, "must not be negative")
    if cfg.keep_checkpoints < 1:
        raise bad("keep_checkpoints", cfg.keep_checkpoints, "must be at least 1")
    if not isinstance(cfg.eval_every, int) or isinstance(cfg.eval_every, bool) or cfg.eval_every < 0:
        raise bad("eval_every", cfg.eval_every, "must be a non-negative integer (0: only at the end)")
    for key in ("retrieval_dev_max_queries", "retrieval_dev_max_docs"):
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise bad(key, value, "must be a positive integer (or null: all)")
    if cfg.retrieval_dev:
        from decoder2vec.evaluation.metrics import RETRIEVAL_METRICS

        if cfg.select_metric not in RETRIEVAL_METRICS:
            raise bad("select_metric", cfg.select_metric, f"must be one of {', '.join(RETRIEVAL_METRICS)}")
    if cfg.lora.r < 1 or cfg.lora.alpha <= 0 or not 0 <= cfg.lora.dropout < 1:
        raise bad("lora", cfg.lora, "needs r >= 1, alpha > 0 and 0 <= dropout < 1")
    if cfg.dtype not in (None, "float32", "bfloat16", "float16"):
        raise bad("dtype", cfg.dtype, "must be float32, bfloat16 or float16")
    if isinstance(cfg, MNTPConfig):
        if cfg.mask_strategy not in ("bert", "all_mask"):
            raise bad("mask_strategy", cfg.mask_strategy, "must be bert or all_mask")
        if cfg.mask_probability is not None and not 0 < cfg.mask_probability < 1:
            raise bad("mask_probability", cfg.mask_probability, "must be between 0 and 1 (exclusive)")
        if cfg.mask_token not in ("blank", "eos", "pad", "new"):
            raise bad("mask_token", cfg.mask_token, "must be blank, eos, pad or new")
        if not 0 <= cfg.eval_fraction < 1:
            raise bad("eval_fraction", cfg.eval_fraction, "must be in [0, 1)")
    if isinstance(cfg, ContrastiveConfig):
        from decoder2vec.encoding.pooling import POOLING_MODES

        if cfg.pooling not in POOLING_MODES and not (cfg.pooling is None and isinstance(cfg, DistillConfig)):
            raise bad("pooling", cfg.pooling, f"must be one of {', '.join(POOLING_MODES)}")
        if cfg.mini_batch_size is not None and cfg.mini_batch_size < 1:
            raise bad("mini_batch_size", cfg.mini_batch_size, "must be a positive integer")
        if not cfg.temperature > 0:
            raise bad("temperature", cfg.temperature, "must be positive")
        dims = cfg.matryoshka_dims
        if any(d < 1 for d in dims) or len(set(dims)) != len(dims):
            raise bad("matryoshka_dims", dims, "must be distinct positive integers, e.g. [576, 256, 128, 64]")
        weights = cfg.matryoshka_weights
        if weights and (len(weights) != len(dims) or any(not w > 0 for w in weights)):
            raise bad(
                "matryoshka_weights",
                weights,
                f"must be one positive weight per matryoshka_dims entry ({len(dims)}), e.g. [4, 1, 1, 1]",
            )
    if isinstance(cfg, SimCSEConfig) and not 0 <= cfg.attention_dropout < 1:
        raise bad("attention_dropout", cfg.attention_dropout, "must be in [0, 1)")
    if isinstance(cfg, SupervisedConfig) and cfg.num_negatives < 0:
        raise bad("num_negatives", cfg.num_negatives, "must not be negative")
    if isinstance(cfg, DistillConfig):
        if cfg.distill_loss not in ("cosine", "mse"):
            raise bad("distill_loss", cfg.distill_loss, "must be cosine or mse")
        if cfg.student_layers is not None and cfg.student_layers < 1:
            raise bad(
                "student_layers", cfg.student_layers, "must be a positive number of layers (or null: all)"
            )
        if cfg.embedding_weight < 0 or cfg.similarity_weight < 0:
            raise bad("embedding_weight/similarity_weight", None, "must not be negative")
        if cfg.embedding_weight == 0 and cfg.similarity_weight == 0:
            raise bad(
                "embedding_weight/similarity_weight", 0, "one of the two loss terms needs a positive weight"
            )
    if message := short_run_warning(cfg, stage):
        warnings.warn(message, stacklevel=3)


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


RECIPE_DIR = Path(__file__).resolve().parent.parent / "resources" / "recipes"


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file path, or the name of a shipped recipe (``llm2vec-llama`` -> resources/recipes/...)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = RECIPE_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
    raise TrainingError(f"no recipe file {name_or_path!r}; shipped recipes: {', '.join(names)}")


RETRIEVAL_RECIPE = "retrieval"  # the shipped recipe whose pairs + supervised sections --corpus adds


def _read_recipe(name_or_path: str | Path | None) -> dict[str, Any]:
    raw = {} if name_or_path is None else yaml.safe_load(recipe_path(name_or_path).read_text()) or {}
    if not isinstance(raw, dict):
        raise SettingError(f"recipe {name_or_path} must be a YAML mapping")
    raw = dict(raw)
    raw.pop("description", None)
    return raw


def with_corpus(raw: dict[str, Any], corpus: list[str], where: str = "recipe") -> dict[str, Any]:
    """``raw`` with the data engine on ``corpus``: the shipped retrieval recipe's ``pairs`` and ``supervised``
    sections under the recipe's own (its keys win), and ``supervised`` among the stages (before a final
    stage that does not continue the pipeline, e.g. distill)."""
    defaults = _read_recipe(RETRIEVAL_RECIPE)
    raw = dict(raw)
    for section in ("pairs", "supervised"):
        own = raw.get(section) or {}
        if not isinstance(own, dict):
            raise SettingError(f"{where}: {section} must be a mapping, got {own!r}")
        raw[section] = {**defaults[section], **own}
    raw["pairs"]["sources"] = list(corpus)
    stages = list(raw.get("stages", [n for n, s in STAGES.items() if s.in_default_pipeline]))
    if "supervised" not in stages:
        last = stages[-1] if stages else None
        at = len(stages) - 1 if last in STAGES and not STAGES[last].continues_pipeline else len(stages)
        stages.insert(at, "supervised")
    raw["stages"] = stages
    return raw


def load_pipeline(name_or_path: str | Path | None, corpus: list[str] | None = None) -> PipelineConfig:
    """Read a pipeline recipe; top-level ``model`` fills in every stage that does not name its own.
    ``corpus`` (``convert --corpus``) turns the data engine on (:func:`with_corpus`)."""
    raw = _read_recipe(name_or_path)
    if corpus:
        raw = with_corpus(raw, corpus, str(name_or_path))
    cfg = from_dict(PipelineConfig, raw, str(name_or_path))
    for name, spec in STAGES.items():
        stage = getattr(cfg, name)
        if spec.continues_pipeline:  # (distill's model is its student: by default the teacher's backbone)
            stage.model = cfg.model
        if isinstance(stage, ContrastiveConfig):
            stage.pooling = cfg.pooling
    return cfg


def load_stage(cls, name_or_path: str | Path | None, stage: str):
    """Read one stage's settings from a recipe file: its ``<stage>:`` section (or the whole file if flat)."""
    if name_or_path is None:
        return cls()
    raw = yaml.safe_load(recipe_path(name_or_path).read_text()) or {}
    section = dict(raw[stage]) if stage in raw else dict(raw)
    for key in ("description", "stages", *STAGES):
        section.pop(key, None)
    spec = STAGES.get(stage)
    if "model" in raw and "model" not in section and (spec is None or spec.continues_pipeline):
        section["model"] = raw["model"]
    if issubclass(cls, ContrastiveConfig) and "pooling" in raw and "pooling" not in section:
        section["pooling"] = raw["pooling"]
    return from_dict(cls, section, f"{name_or_path}:{stage}")
