"""Training settings: one dataclass per stage with the paper's defaults, and ``convert``'s
:class:`PipelineConfig`. Plain data, no behaviour: recipe files are read into them by ``loading.py``,
checked by ``checks.py``, and the stages that use them are listed in ``stages.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from decoder2vec.pairs.settings import PairsSettings


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

    # A learning rate measured to work for short CPU runs (BENCHMARKS.md: the SimCSE sweep and the cpu-1h
    # budget): what the short-run warning suggests (checks.short_run_warning). Not a setting.
    CPU_RATE: ClassVar[str] = "1e-3"


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
    CPU_RATE: ClassVar[str] = "3e-4"

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
    CPU_RATE: ClassVar[str] = "3e-3"

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


@dataclass
class PipelineConfig:
    """``convert``'s settings: one section per registered stage (``stages.STAGES``), and the ``stages`` to run.

    bidirectional -> MNTP -> SimCSE (-> supervised when it has data) by default; each stage starts from the
    previous enabled stage's merged weights. ``distill`` may come last: the encoder made so far is then the
    teacher, and the result is the student (see ``training/pipeline.py``). ``pairs.sources``
    (``--corpus``) turns the data engine on: the supervised stage then trains on the pairs built from them."""

    model: str = "smollm2-135m"
    pooling: str = "mean"
    mntp: MNTPConfig = field(default_factory=MNTPConfig)
    simcse: SimCSEConfig = field(default_factory=SimCSEConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    # an STS-B file (sts-dev.csv layout) scored before and after the supervised stage; None: skipped
    sts_dev: str | None = None
    # the registry's stages with in_default_pipeline (distill only when asked for)
    stages: list[str] = field(default_factory=lambda: ["mntp", "simcse", "supervised"])


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
