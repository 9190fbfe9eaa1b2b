"""Distillation: a smaller, faster student encoder that gives the teacher's embeddings (issue #21).

The teacher is any decoder2vec encoder (folder, alias such as ``smollm2-135m-llm2vec``, GGUF) or a local
sentence-transformers folder; the student is any decoder decoder2vec loads, by default the teacher's own
backbone, cut to its first ``student_layers`` decoder layers. On unlabeled text (by default the offline
Wikipedia leads and their sentences) the student learns

    embedding_weight  x  mean(1 - cos(s_i, t_i))   (or the MSE of s_i and t_i)
  + similarity_weight x  KL(teacher || student) of each text's softmax(cos / temperature) over the batch

on the full vectors and on every Matryoshka prefix (``matryoshka_dims``), with a LoRA or, with
``full_finetune``, every weight but the input embeddings. The student embeds into the teacher's own space:
documents indexed with the teacher can be searched with the student's queries.

**Widths and the projection.** With ``projection`` (always when the student's width differs from the
teacher's and the direct term is on; asked for with ``projection: true`` otherwise) a linear map follows
the student's pooling. It starts as the least-squares map from the untrained student's pooled vectors to
the teacher's embeddings of the first cached texts (ridge-regularised, closed form), trains with the
student, and is saved with it as sentence-transformers' Dense module: the cut of a same-width teacher
starts far from the teacher's space (its layer-N states), and that map alone closes most of the distance.
With ``embedding_weight: 0`` a student of another width can also learn only the teacher's similarity
structure, without a projection (its vectors are then its own, not comparable with the teacher's).

**Teacher embeddings** are computed once, for exactly the texts the run's ``max_steps`` batches visit, and
cached in the run folder (``teacher_embeddings/``: a key of teacher identity + settings + texts, and
atomically written parts of 1024 rows), so no step runs the teacher, a killed run's cache is reused by
``--resume`` (and finished parts by a run killed while caching), and a resume ends with exactly the
weights of an uninterrupted run. Outputs::

    OUT/ run.json, metrics.jsonl, checkpoint-*/, teacher_embeddings/   the run (as every stage)
         adapter/   the student's LoRA (for the cut student, not the original model); absent with full_finetune
         encoder/   the student: a saved encoder folder (Encoder.save) + recipe.json naming the teacher
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decoder2vec.backbone.layers import truncate_layers
from decoder2vec.encoder_config import ENCODER_CONFIG, default_max_length, model_context
from decoder2vec.errors import ModelLoadError
from decoder2vec.io import json_safe, write_file_atomic, write_json_atomic
from decoder2vec.training.data.corpus import read_distill_texts
from decoder2vec.training.data.sampling import BatchPlan, shard
from decoder2vec.training.distributed import gather_with_grad
from decoder2vec.training.errors import SettingError, TrainingError
from decoder2vec.training.loop import Stage
from decoder2vec.training.losses import distill_loss
from decoder2vec.training.modules import add_lora
from decoder2vec.training.recipes.common import load_for_training, save_adapter
from decoder2vec.training.recipes.contrastive import ContrastiveBatch, ContrastiveRecipe
from decoder2vec.training.settings import DistillConfig, to_dict

log = logging.getLogger(__name__)

TEACHER_CACHE = "teacher_embeddings"
CACHE_CHUNK = 1024  # rows per cache part (one part is the most a kill while caching can lose)
RECORD = "recipe.json"
ST_FILES = ("modules.json", "config_sentence_transformers.json")
_UNHASHED = {"README.md", RECORD}  # files of a model folder that do not change its embeddings


# ------------------------------------------------------------------------------------------ the teacher
@dataclass(frozen=True)
class Teacher:
    """A teacher, described without loading its weights."""

    source: str  # as given
    path: str  # the resolved folder (or a hub id)
    kind: str  # "decoder2vec" or "sentence-transformers"
    fingerprint: str  # SHA-256 of the folder's model files (or the hub id)
    width: int | None = None  # embedding width, when the config says (decoder2vec teachers)
    pooling: str | None = None  # a saved decoder2vec encoder's pooling
    max_length: int | None = None  # a saved decoder2vec encoder's token limit


def is_sentence_transformers_folder(path: Path) -> bool:
    """A sentence-transformers model folder that is not a decoder2vec encoder (those carry ST files too)."""
    return (
        path.is_dir()
        and not (path / ENCODER_CONFIG).is_file()
        and any((path / name).is_file() for name in ST_FILES)
    )


def folder_fingerprint(folder: Path) -> str:
    """SHA-256 over the names and contents of a model folder's top-level files and its sentence-transformers
    module folders (not a convert output's ``stages/`` or other clutter, nor README/recipe.json)."""
    files = [
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in _UNHASHED
    ]
    modules = folder / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text())
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"{modules} is not valid JSON ({exc})") from exc
        for entry in entries if isinstance(entries, list) else []:
            sub = folder / str(entry.get("path", "")) if isinstance(entry, dict) else folder
            if sub != folder and sub.is_dir():
                files += [p for p in sub.rglob("*") if p.is_file() and not p.name.startswith(".")]
    digest = hashlib.sha256()
    for path in sorted(set(files)):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def describe_teacher(source: str) -> Teacher:
    """Find the teacher and check that it can load, without loading its weights: a decoder2vec teacher is
    described by its :class:`~decoder2vec.spec.EncoderSpec` (its width is its vectors', after any projection)."""
    from decoder2vec.spec import EncoderSpec

    if not source:
        raise SettingError(
            "distill needs a teacher: --teacher FOLDER|ALIAS|GGUF (a decoder2vec encoder, e.g. "
            "smollm2-135m-llm2vec) or a sentence-transformers model folder"
        )
    path = Path(source).expanduser()
    if is_sentence_transformers_folder(path):
        try:
            import sentence_transformers  # noqa: F401
        except ImportError as exc:
            raise TrainingError(
                f"teacher {source} is a sentence-transformers model: pip install sentence-transformers"
            ) from exc
        return Teacher(source, str(path), "sentence-transformers", folder_fingerprint(path))
    try:
        spec = EncoderSpec.read(source)
    except ModelLoadError as exc:
        raise ModelLoadError(f"the teacher does not load: {exc}") from exc
    folder = Path(spec.path)
    return Teacher(
        source,
        spec.path,
        "decoder2vec",
        folder_fingerprint(folder) if folder.is_dir() else spec.path,
        width=spec.width,
        pooling=spec.pooling,
        max_length=spec.max_length,
    )


def _model_config(resolved: str, role: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolved)
    except Exception as exc:
        raise ModelLoadError(
            f"the {role} does not load: could not read a model config from {resolved}: {exc}"
        ) from exc


def load_teacher(
    teacher: Teacher, max_length: int, device: torch.device
) -> Callable[[list[str]], np.ndarray]:
    """``texts -> (n, D) float32`` teacher embeddings, texts cut to ``max_length`` tokens (the student's cap)."""
    if teacher.kind == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(
                teacher.path, device=str(device), trust_remote_code=False, local_files_only=True
            )
        except Exception as exc:
            raise ModelLoadError(
                f"the teacher {teacher.path} does not load as a sentence-transformers model: {exc}"
            ) from exc
        model.max_seq_length = min(model.max_seq_length or max_length, max_length)
        return lambda texts: np.asarray(
            model.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False),
            dtype=np.float32,
        )
    from decoder2vec.encoding.encoder import Encoder

    encoder = Encoder.from_pretrained(teacher.path, device=device)
    encoder.max_length = min(encoder.max_length, max_length)

    def encode(texts: list[str]) -> np.ndarray:
        with warnings.catch_warnings():  # truncation to the student's cap is intended
            warnings.filterwarnings("ignore", message=".*were truncated")
            return np.asarray(encoder.encode(texts, batch_size=64, show_progress_bar=False), dtype=np.float32)

    return encode


# ------------------------------------------------------------------------------------------ checks
def student_source(cfg: DistillConfig, teacher_path: str) -> str:
    """The student to load: ``cfg.model``, or the teacher's own backbone."""
    return cfg.model or teacher_path


def check_student(cfg: DistillConfig, source: str, teacher_width: int | None) -> Any:
    """The student's config, checked against the settings (layers, width, Matryoshka dims); no weights load."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from decoder2vec.backbone.loading import resolve_model_path

    try:
        resolved = resolve_model_path(source)
    except ModelLoadError as exc:
        raise ModelLoadError(f"the student does not load: {exc}") from exc
    config = _model_config(resolved, "student")
    if getattr(config, "model_type", None) not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        hint = (
            "" if cfg.model else " (the default student is the teacher's backbone; name one with --student)"
        )
        raise ModelLoadError(
            f"the student {source} holds a '{config.model_type}' model, not a decoder-only language model{hint}"
        )
    layers = int(config.num_hidden_layers)
    if cfg.student_layers is not None and not 1 <= cfg.student_layers <= layers:
        raise SettingError(
            f"distill.student_layers = {cfg.student_layers}: the student {source} has {layers} decoder layers; "
            f"choose 1 to {layers}"
        )
    width = int(config.hidden_size)
    check_widths(cfg, width, teacher_width)
    top = cfg.lora.top_layers
    if not cfg.full_finetune and top is not None and top > (cfg.student_layers or layers):
        raise SettingError(
            f"distill.lora.top_layers = {top}: the student keeps only {cfg.student_layers or layers} layers"
        )
    return config


def projects(cfg: DistillConfig, student_width: int, teacher_width: int | None) -> bool:
    """Whether the student gets a learned projection after pooling: asked for, or (``projection`` unset)
    needed because the direct term compares vectors of different widths."""
    if cfg.projection is not None:
        return bool(cfg.projection)
    return teacher_width is not None and student_width != teacher_width and cfg.embedding_weight > 0


def check_widths(cfg: DistillConfig, student_width: int, teacher_width: int | None) -> None:
    unequal = teacher_width is not None and student_width != teacher_width
    if unequal and cfg.embedding_weight > 0 and cfg.projection is False:
        raise SettingError(
            f"the student embeds in {student_width} dimensions and the teacher in {teacher_width}: without "
            "a projection (--no-projection) the direct term needs equal widths. Drop --no-projection (a "
            "learned map after pooling), or set distill.embedding_weight=0 to learn only the teacher's "
            "similarities"
        )
    # a projection makes the student's vectors as wide as the teacher's
    width = (
        teacher_width
        if teacher_width is not None and projects(cfg, student_width, teacher_width)
        else student_width
    )
    narrowest = min(width, teacher_width or width)
    too_wide = [d for d in cfg.matryoshka_dims if d > narrowest]
    if too_wide:
        raise SettingError(f"distill.matryoshka_dims {too_wide} exceed the embedding width {narrowest}")


def check_inputs(cfg: DistillConfig, pipeline=None) -> list[str]:
    """The data, teacher and student settings, checked before any model loads; returns the texts.

    In ``convert`` (``pipeline`` given) the teacher is the encoder the previous stages make, which does not
    exist yet: the student is then checked against the pipeline's model.
    """
    texts = read_distill_texts(cfg.data, cfg.text_field, cfg.min_words)
    if pipeline is None:
        teacher = describe_teacher(cfg.teacher)
        check_student(cfg, student_source(cfg, teacher.path), teacher.width)
        return texts
    if cfg.teacher:
        raise SettingError(
            f"distill.teacher = {cfg.teacher!r}: in convert the teacher is the encoder the previous stages make; "
            "to distill another encoder use `decoder2vec train distill --teacher`"
        )
    if not cfg.model and cfg.student_layers is None:
        raise SettingError(
            "distill.student_layers is not set: in convert the student is the encoder made so far cut to its "
            "first N layers; set it (e.g. --set distill.student_layers=15) or name a student with distill.model"
        )
    from decoder2vec.spec import EncoderSpec

    try:  # the encoder the stages make from the pipeline's model: its width, no projection
        teacher_width = EncoderSpec.read(pipeline.model).hidden_size
    except ModelLoadError as exc:
        raise ModelLoadError(f"the teacher does not load: {exc}") from exc
    check_student(cfg, cfg.model or pipeline.model, teacher_width)
    return texts


# ------------------------------------------------------------------------------------------ the projection
FIT_TEXTS = 2048  # cached texts the least-squares start of the projection is fitted on
RIDGE = 1e-2  # its regulariser, relative to the mean eigenvalue of the student's Gram matrix


def least_squares_projection(student: np.ndarray, teacher: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """The (out, in) matrix ``W`` minimising ``||student @ W.T - teacher||^2 + lam ||W||^2`` (ridge regression
    without intercept, in float64), ``lam = ridge * trace(student.T @ student) / in``: scale-free, and a
    well-posed solve even when there are fewer texts than dimensions."""
    x, y = np.asarray(student, dtype=np.float64), np.asarray(teacher, dtype=np.float64)
    gram = x.T @ x
    lam = ridge * np.trace(gram) / gram.shape[0]
    return np.linalg.solve(gram + lam * np.eye(gram.shape[0]), x.T @ y).T.astype(np.float32)


# ------------------------------------------------------------------------------------------ the cache
def visited_indices(n: int, batch_size: int, seed: int, steps: int) -> np.ndarray:
    """Sorted example indices of the first ``steps`` global batches of a :class:`BatchPlan` (what a run sees)."""
    plan = BatchPlan.single(n, batch_size, seed)
    batches = iter(plan)
    seen: set[int] = set()
    for _ in range(steps):
        seen.update(next(batches))
        if len(seen) == n:
            break
    return np.array(sorted(seen), dtype=np.int64)


def cache_key(teacher: Teacher, max_length: int, texts: list[str]) -> str:
    digest = hashlib.sha256()
    head = {
        "kind": teacher.kind,
        "teacher": teacher.fingerprint,
        "max_length": max_length,
        "count": len(texts),
    }
    digest.update(json.dumps(head, sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()


def teacher_embeddings(
    folder: Path, key: str, texts: list[str], encode: Callable[[], Callable[[list[str]], np.ndarray]]
) -> np.ndarray:
    """The teacher's (n, D) embeddings of ``texts``, read from ``folder`` where cached under ``key``, the rest
    computed (``encode()`` loads the teacher, only if anything is missing) and written part by part."""
    from safetensors.numpy import load_file, save

    key_file = folder / "key.json"
    if key_file.is_file() and json.loads(key_file.read_text()).get("key") != key:
        log.info("teacher cache %s is for other texts or another teacher: recomputing", folder)
        shutil.rmtree(folder)
    if not key_file.is_file():
        write_json_atomic(key_file, {"key": key, "count": len(texts), "chunk": CACHE_CHUNK})
    starts = range(0, len(texts), CACHE_CHUNK)
    part = lambda start: folder / f"part-{start // CACHE_CHUNK:05d}.safetensors"
    missing = [start for start in starts if not part(start).is_file()]
    if missing:
        todo = sum(len(texts[start : start + CACHE_CHUNK]) for start in missing)
        log.info("teacher: embedding %d of %d texts (the rest are cached)", todo, len(texts))
        model = encode()
        for start in missing:
            rows = model(texts[start : start + CACHE_CHUNK])
            write_file_atomic(part(start), save({"embeddings": np.ascontiguousarray(rows, dtype=np.float32)}))
        del model
        gc.collect()
    return np.concatenate([load_file(str(part(start)))["embeddings"] for start in starts])


# ------------------------------------------------------------------------------------------ the recipe
@dataclass
class DistillBatch(ContrastiveBatch):
    teacher: torch.Tensor | None = None  # (global batch, D): the teacher rows of every process's texts


class DistillRecipe(ContrastiveRecipe):
    """Distillation as one object: ``setup`` (data, teacher description, student checks, then the student),
    ``prepare`` (the teacher cache, once the run folder is claimed), ``make_batch``, ``loss``, ``save``; the
    embed-and-backward step (GradCache with ``mini_batch_size``) is the contrastive base class's."""

    name = "distill"
    cfg: DistillConfig

    def setup(self, accelerator) -> None:
        from decoder2vec.encoding.encoder import Encoder

        cfg = self.cfg
        self.acc, self.rank, self.world_size = (
            accelerator,
            accelerator.process_index,
            accelerator.num_processes,
        )
        # data, teacher and student settings first: nothing loads for a run that cannot work
        self.texts = read_distill_texts(cfg.data, cfg.text_field, cfg.min_words)
        self.plan = BatchPlan.single(len(self.texts), cfg.batch_size * self.world_size, cfg.seed)
        self.teacher = describe_teacher(cfg.teacher)
        self.student = student_source(cfg, self.teacher.path)
        check_student(cfg, self.student, self.teacher.width)

        base, tokenizer = load_for_training(replace(cfg, model=self.student), accelerator, with_lm_head=False)
        if cfg.student_layers is not None:
            truncate_layers(base, cfg.student_layers)
        if cfg.full_finetune:
            base.requires_grad_(True)
            base.get_input_embeddings().requires_grad_(False)  # vocabulary rows: kept as the teacher's
            self.peft_model = None
        else:
            self.peft_model = add_lora(base, cfg.lora, seed=cfg.seed)
        model = self.peft_model if self.peft_model is not None else base
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if self.trainable == 0:
            raise TrainingError(
                f"the student {self.student} has no trainable parameters; use a LoRA or --full-finetune"
            )
        context = model_context(base.config)
        self.max_length = min(cfg.max_seq_length, context) if context else cfg.max_seq_length
        pooling = cfg.pooling or self.teacher.pooling or "mean"
        self.encoder = Encoder(model, tokenizer, pooling=pooling, max_length=self.max_length)
        self.encoder.module.to(accelerator.device)
        self.teacher_rows: torch.Tensor | None = None
        self.row_of: np.ndarray | None = None

    def run_identity(self, world_size: int) -> dict[str, Any]:
        # the teacher's weights, not only its name: a resume against a changed teacher is refused
        return {
            **super().run_identity(world_size),
            "teacher": {"kind": self.teacher.kind, "sha256": self.teacher.fingerprint},
        }

    def prepare(self, run_dir: Path, resuming: bool = False) -> None:
        """Teacher embeddings of every text the run will see: cached in the run folder, computed once; and
        the projection's least-squares start, fitted on a fresh start only."""
        cfg, acc = self.cfg, self.acc
        needed = visited_indices(len(self.texts), cfg.batch_size * self.world_size, cfg.seed, cfg.max_steps)
        texts = [self.texts[i] for i in needed]
        key = cache_key(self.teacher, self.max_length, texts)
        folder = run_dir / TEACHER_CACHE
        loader = lambda: load_teacher(self.teacher, self.max_length, acc.device)
        if acc.is_main_process:
            teacher_embeddings(folder, key, texts, loader)
        acc.wait_for_everyone()
        rows = teacher_embeddings(folder, key, texts, loader)  # (every process reads the finished cache)
        width, teacher_width = self.encoder.embedding_dim, int(rows.shape[1])
        check_widths(cfg, width, teacher_width)
        if projects(cfg, width, teacher_width):
            if resuming:  # the trained map comes from the checkpoint: only its shape is needed here
                self.add_projection(np.zeros((teacher_width, width), dtype=np.float32))
            else:
                self.add_projection(self.least_squares_start(texts[:FIT_TEXTS], rows[:FIT_TEXTS]))
        self.teacher_rows = torch.from_numpy(rows)
        self.row_of = np.full(len(self.texts), -1, dtype=np.int64)
        self.row_of[needed] = np.arange(len(needed))

    def add_projection(self, weight: np.ndarray) -> None:
        """A map after pooling, (teacher width, student width), trained from ``weight`` with the student."""
        self.encoder.projection = weight
        self.trainable += weight.size
        log.info("projection %d -> %d", weight.shape[1], weight.shape[0])

    def least_squares_start(self, texts: list[str], targets: np.ndarray) -> np.ndarray:
        """The least-squares map from the untrained student's pooled vectors of ``texts`` to the teacher's
        ``targets``."""
        module = self.encoder.module
        was_training = module.training
        module.eval()  # no dropout: the fit sees the student as it encodes (and draws no random numbers)
        try:
            with warnings.catch_warnings():  # truncation to the training cap is intended
                warnings.filterwarnings("ignore", message=".*were truncated")
                pooled = self.encoder.encode(texts, batch_size=64, show_progress_bar=False)
        finally:
            module.train(was_training)
        log.info("projection: least-squares start on %d texts", len(texts))
        return least_squares_projection(pooled, targets)

    def make_batch(self, indices: list[int]) -> DistillBatch:
        mine = shard(indices, self.rank, self.world_size)
        tokens = self.encoder.tokenize([self.texts[i] for i in mine])
        # the teacher rows of the global batch, in the order gather_with_grad stacks the processes' rows
        global_rows = self.row_of[np.asarray(indices[: len(mine) * self.world_size], dtype=np.int64)]
        return DistillBatch(tokens, [len(mine)], teacher=self.teacher_rows[torch.from_numpy(global_rows)])

    def loss(self, reps: torch.Tensor, batch: DistillBatch) -> torch.Tensor:
        cfg = self.cfg
        loss_fn = lambda s, t: distill_loss(
            s,
            t,
            kind=cfg.distill_loss,
            embedding_weight=cfg.embedding_weight,
            similarity_weight=cfg.similarity_weight,
            temperature=cfg.temperature,
        )
        student = gather_with_grad(reps)
        return self.nested_loss(loss_fn, (student, batch.teacher.to(student.device))) * self.world_size

    def chance_loss(self, batch: DistillBatch) -> None:
        """None: distillation has no chance level. Its targets are fixed teacher rows, so the loss of a
        student that maps every text to one vector depends on which vector (InfoNCE's does not)."""

    def stage(self) -> Stage:
        return Stage(
            self.name,
            self.encoder.module,
            self.plan,
            self.make_batch,
            self.step,
            prepare=self.prepare,
            scratch=(TEACHER_CACHE,),
        )

    def save(self, out_dir: Path) -> tuple[Path | None, Path]:
        """``adapter/`` (LoRA students) and ``encoder/``: the student as a saved encoder + ``recipe.json``."""
        from decoder2vec import __version__

        cfg = self.cfg
        adapter = None
        if self.peft_model is not None:
            adapter = save_adapter(self.peft_model, out_dir / "adapter")
            self.peft_model.merge_and_unload()  # in place: the encoder's backbone is now merged
        self.encoder.module.eval()
        # the saved student embeds whole texts like its teacher, not only the training truncation
        self.encoder.max_length = min(
            self.teacher.max_length or default_max_length(self.encoder.model.config),
            model_context(self.encoder.model.config) or 1 << 30,
        )
        self.encoder.matryoshka_dimensions = list(cfg.matryoshka_dims) or None
        folder = self.encoder.save(out_dir / "encoder", overwrite=True)
        record = {
            "decoder2vec": __version__,
            "stage": self.name,
            "teacher": cfg.teacher,
            "teacher_kind": self.teacher.kind,
            "teacher_sha256": self.teacher.fingerprint,
            "student": cfg.model or f"the teacher's backbone ({self.teacher.path})",
            "student_layers": int(self.encoder.model.config.num_hidden_layers),
            "projection": None
            if self.encoder.projection is None
            else "{1} -> {0} after pooling".format(*self.encoder.projection.shape),
            "trained_parameters": self.trainable,
            "data": cfg.data,
            "config": to_dict(cfg),
            "metrics": getattr(self, "metrics", {}),
        }
        write_json_atomic(folder / RECORD, json_safe(json.loads(json.dumps(record, default=str))))
        return adapter, folder
