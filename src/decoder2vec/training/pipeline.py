"""``convert``: the whole LLM2Vec recipe in one call.

bidirectional -> MNTP -> SimCSE (-> supervised when it has data), each stage training a fresh LoRA on
top of the base with all previous adapters merged in. Stage runs live in ``OUT/stages/<stage>/`` (so
``resume`` continues any of them); the result is a ready encoder folder::

    OUT/  model.safetensors, config.json, tokenizer files, sentence-transformers files (Encoder.save)
          adapters/<stage>/   the LoRA adapter of each stage, in the order applied
          recipe.json         recipe, data and final metrics of every stage
          stages/<stage>/     the training runs (checkpoints, metrics.jsonl)
          stages/pipeline.json  the settings the conversion started with (``--resume`` reads them)

The stages are the registry's (:data:`~decoder2vec.training.stages.STAGES`). A stage that does not continue
the pipeline (``distill``) may come last: the encoder the earlier stages made (the base model with their
adapters merged, written to ``stages/teacher/``) is its teacher, and its student (by default that encoder
cut to ``distill.student_layers`` layers) is the result. ``OUT`` then holds the student, and no
``adapters/`` (the stages' adapters apply to the teacher; they stay in ``stages/<stage>/adapter``).

The data engine (``pairs.sources``, ``convert --corpus``): before ``supervised``, the encoder made so far is
written to ``stages/pre_supervised/``, ``decoder2vec pairs`` builds ``stages/pairs/`` from the corpus (resumed
shard by shard like the stages), and ``supervised`` trains on its ``train.jsonl``, selecting its checkpoint on
its ``dev/`` split. After publishing, BM25, that earlier encoder and the result are scored side by side on the
dev split (``recipe.json`` ``"retrieval"``; :func:`retrieval_table` prints it).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from decoder2vec.encoder_config import is_encoder_file
from decoder2vec.io import replace_entries, write_file_atomic
from decoder2vec.training.checkpoint import RUN_FILE, identity_diff, read_record
from decoder2vec.training.checks import check_stage
from decoder2vec.training.errors import OutputExistsError, ResumeMismatchError, SettingError, TrainingError
from decoder2vec.training.loading import from_dict
from decoder2vec.training.recipes.common import read_retrieval_dev
from decoder2vec.training.settings import ContrastiveConfig, PipelineConfig, to_dict
from decoder2vec.training.stages import STAGES, run_stage

log = logging.getLogger(__name__)
RECORD = "recipe.json"
PIPELINE_RECORD = "pipeline.json"  # in OUT/stages/, written before the first stage
TEACHER = "teacher"  # OUT/stages/teacher/: the encoder a final distill stage learns from
PAIRS = "pairs"  # OUT/stages/pairs/: the data engine's output (decoder2vec pairs)
PRE_SUPERVISED = "pre_supervised"  # OUT/stages/pre_supervised/: the encoder the data engine starts from
CURRENT = "current"  # pairs.filter_model / pairs.miner: that encoder
REPORT_METRICS = ("ndcg_at_10", "recall_at_10", "mrr_at_10")


def _is_ours(out: Path) -> bool:
    """A folder convert wrote: its record, its settings record, or a stage run with its run file."""
    return (
        (out / RECORD).is_file()
        or (out / "stages" / PIPELINE_RECORD).is_file()
        or any((out / "stages").glob(f"*/{RUN_FILE}"))
    )


def pipeline_settings(cfg: PipelineConfig) -> dict[str, Any]:
    """What a conversion depends on: its settings, with the fields convert sets itself (a continuing
    stage's model, adapters and merge) as convert sets them."""
    settings = to_dict(cfg)
    for name, spec in STAGES.items():
        if spec.continues_pipeline:
            settings[name].update(model=cfg.model, adapters=[], merge=False)
    return settings


def recorded_pipeline(out: str | Path) -> tuple[PipelineConfig, str | None] | None:
    """The settings (and recipe source) of the conversion in ``out``: those it started with
    (``stages/pipeline.json``), else a finished conversion's ``recipe.json``; None if it has neither."""
    out = Path(out).expanduser()
    for file in (out / "stages" / PIPELINE_RECORD, out / RECORD):
        if not file.is_file():
            continue
        data = read_record(file)
        if isinstance(data, dict) and isinstance(data.get("recipe"), dict):
            recipe = {k: v for k, v in data["recipe"].items() if k != "description"}
            return from_dict(PipelineConfig, recipe, str(file)), data.get("recipe_source")
    return None


def settings_diff(saved: PipelineConfig, current: PipelineConfig) -> list[str]:
    """Every setting (dotted) in which ``current`` differs from ``saved``, ignoring those that do not
    change the result (logging and checkpoint intervals) and those convert derives (a continuing stage's
    model is the pipeline's: a different ``--model`` is one difference, not one per stage)."""

    from decoder2vec.pairs.settings import RUNTIME

    def comparable(cfg: PipelineConfig) -> dict[str, Any]:
        settings = pipeline_settings(cfg)
        for name, spec in STAGES.items():
            if spec.continues_pipeline:
                for key in ("model", "adapters", "merge"):
                    settings[name].pop(key, None)
        for key in RUNTIME:
            settings["pairs"].pop(key, None)
        return settings

    return identity_diff(comparable(saved), comparable(current))


def _check_resume_settings(out: Path, cfg: PipelineConfig) -> None:
    recorded = recorded_pipeline(out)
    if recorded is None:
        return
    diffs = settings_diff(recorded[0], cfg)
    if diffs:
        raise ResumeMismatchError(
            f"{out} holds a conversion with other settings; refusing to resume (pass --resume alone to "
            "continue it with its own settings, or --overwrite to start over):\n  " + "\n  ".join(diffs)
        )


def _check_stages(cfg: PipelineConfig) -> None:
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise TrainingError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    if len(set(cfg.stages)) != len(cfg.stages):
        raise SettingError(f"stages {cfg.stages}: each stage may run once")
    for name in cfg.stages[:-1]:
        if not STAGES[name].continues_pipeline:
            raise SettingError(
                f"stages {cfg.stages}: {name} turns the encoder made so far into another model, so it must "
                "be the last stage"
            )


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file; give a folder for the encoder")
    if not out.exists() or not any(out.iterdir()):
        if resume:
            raise OutputExistsError(f"nothing to resume: {out} holds no conversion")
        return
    if not _is_ours(out):
        raise OutputExistsError(f"{out} is not empty and was not written by convert; choose another folder")
    if not (resume or overwrite):
        raise OutputExistsError(
            f"{out} already holds a conversion; pass --resume to continue it or --overwrite to redo it"
        )


def check_inputs(cfg: PipelineConfig) -> None:
    """Every stage's settings and data, checked before the first step of the first stage: a missing
    SimCSE file must not surface after a whole MNTP stage."""
    from decoder2vec.encoding.pooling import check_pooling_mode

    check_pooling_mode(cfg.pooling)
    _check_stages(cfg)
    if cfg.pairs.sources:
        check_pairs(cfg)
    elif cfg.sts_dev:
        raise SettingError(
            f"sts_dev = {cfg.sts_dev!r}: it is scored before and after the data engine's supervised stage; "
            "give a corpus (--corpus / pairs.sources) or unset it"
        )
    for name in cfg.stages:
        spec, stage_cfg = STAGES[name], getattr(cfg, name)
        if name == "supervised" and cfg.pairs.sources:
            check_stage(stage_cfg, name)  # its data is made by the data engine: checked by check_pairs
            read_retrieval_dev(stage_cfg, name)
            continue
        if spec.optional and not stage_cfg.data:
            continue  # skipped, and recorded as such
        check_stage(stage_cfg, name)
        spec.check_inputs(stage_cfg, cfg)
        read_retrieval_dev(stage_cfg, name)


def pairs_settings(cfg: PipelineConfig, current: Path | str = CURRENT):
    """The data engine's :class:`~decoder2vec.pairs.PairsSettings`: the pipeline's model writes the queries
    unless ``pairs.generator`` names another, and ``"current"`` is the encoder folder ``current``."""
    from decoder2vec.pairs.settings import PairsSettings

    values = {f.name: getattr(cfg.pairs, f.name) for f in dataclasses.fields(PairsSettings)}
    values["generator"] = values["generator"] or cfg.model
    for key in ("filter_model", "miner"):
        if values[key] == CURRENT:
            values[key] = str(current)
    return PairsSettings(**values)


def check_pairs(cfg: PipelineConfig) -> None:
    """The data engine's settings and corpus (readable, non-empty), before any model loads; its output does
    not exist yet, so the supervised stage's data is not read here."""
    from decoder2vec.pairs.pipeline import check_settings
    from decoder2vec.pairs.sources import read_documents

    if "supervised" not in cfg.stages:
        raise SettingError(
            f"pairs.sources {cfg.pairs.sources}: the pairs train the supervised stage, which stages "
            f"{cfg.stages} leave out; add it (--set 'stages=[mntp, simcse, supervised]')"
        )
    if cfg.supervised.data:
        raise SettingError(
            f"supervised.data = {cfg.supervised.data!r} and pairs.sources {cfg.pairs.sources} (--corpus) both "
            "give the supervised stage's data; keep one (--set supervised.data= to train on the pairs)"
        )
    if cfg.pairs.overwrite:
        raise SettingError(
            "pairs.overwrite: convert has its own --overwrite (it redoes the whole conversion)"
        )
    short = (
        cfg.pairs.keep_short
        or cfg.pairs.miner == "none"
        or cfg.pairs.negatives < cfg.supervised.num_negatives
    )
    if cfg.supervised.num_negatives and short:
        raise SettingError(
            f"supervised.num_negatives = {cfg.supervised.num_negatives} needs that many hard negatives per "
            f"pair, but pairs.negatives = {cfg.pairs.negatives}, pairs.miner = {cfg.pairs.miner!r}, "
            f"pairs.keep_short = {cfg.pairs.keep_short} may give fewer"
        )
    settings = pairs_settings(cfg)
    check_settings(settings)
    read_documents(
        settings.sources,
        text_field=settings.text_field,
        title_field=settings.title_field,
        id_field=settings.id_field,
        limit=settings.limit,
    )
    if cfg.sts_dev:
        from decoder2vec.evaluation.loaders import load_stsb

        load_stsb(cfg.sts_dev)


def calibration_sample(cfg, size: int = 1000) -> list[str]:
    """Up to ``size`` sentences spread evenly over a stage's corpus: the encoder's int8 calibration sample."""
    from decoder2vec.training.data.corpus import read_sentences

    sentences = read_sentences(cfg.data, cfg.text_field, cfg.min_words)
    step = max(1, len(sentences) // size)
    return sentences[::step][:size]


def check_resume(cfg: PipelineConfig, out: Path, world_size: int) -> None:
    """Every started stage's saved settings against this run's, before the first stage resumes, so one
    error names every difference of every stage (not one stage per attempt). The stage settings are
    completed as :func:`convert` completes them (model, the earlier stages' adapters, no merge)."""
    from decoder2vec.training.checkpoint import check_resumes
    from decoder2vec.training.recipes.common import identity

    runs, adapters = [], []
    for name in cfg.stages:
        spec, stage_cfg = STAGES[name], dataclasses.replace(getattr(cfg, name))
        if name == "supervised" and cfg.pairs.sources:
            _on_pairs(stage_cfg, out)
        if (spec.optional and not stage_cfg.data) or not spec.continues_pipeline:
            continue  # (skipped; a distill run checks its own identity, teacher weights included)
        stage_cfg.model, stage_cfg.adapters, stage_cfg.merge = cfg.model, list(adapters), False
        runs.append((out / "stages" / name, identity(name, stage_cfg, world_size)))
        adapters.append(str(out / "stages" / name / "adapter"))
    check_resumes(runs)


def convert(
    cfg: PipelineConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    recipe_source: str | None = None,
) -> Path:
    """Run the pipeline and write the encoder folder ``out`` (see the module docstring)."""
    from accelerate import PartialState

    from decoder2vec import __version__

    out = Path(out).expanduser()
    _check_stages(cfg)
    _check_out(out, resume, overwrite)
    if resume:
        _check_resume_settings(out, cfg)
    check_inputs(cfg)
    state = PartialState()
    if resume:
        check_resume(cfg, out, state.num_processes)
    if overwrite and not resume and state.is_main_process and (out / "stages").exists():
        shutil.rmtree(out / "stages")
    created = not out.exists()
    if state.is_main_process:
        record_file = out / "stages" / PIPELINE_RECORD
        record_file.parent.mkdir(parents=True, exist_ok=True)
        settings = {
            "decoder2vec": __version__,
            "recipe_source": recipe_source,
            "recipe": pipeline_settings(cfg),
        }
        write_file_atomic(record_file, json.dumps(settings, indent=2, default=str) + "\n")
    state.wait_for_everyone()
    try:
        return _convert(cfg, out, state, resume=resume, recipe_source=recipe_source)
    except BaseException:
        # a conversion that fails before any stage's first checkpoint leaves nothing behind
        if state.is_main_process and not any((out / "stages").glob("*/checkpoint-*")):
            _discard(out, created)
        raise


def _discard(out: Path, created: bool) -> None:
    stages = out / "stages"
    (stages / PIPELINE_RECORD).unlink(missing_ok=True)
    for folder in (stages, out) if created else (stages,):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _convert(cfg: PipelineConfig, out: Path, state, *, resume: bool, recipe_source: str | None) -> Path:
    from decoder2vec import __version__
    from decoder2vec.backbone.loading import load_backbone
    from decoder2vec.encoding.encoder import Encoder

    adapters: list[str] = []
    student: Path | None = None  # the encoder a final distill stage made
    record: dict[str, Any] = {
        "decoder2vec": __version__,
        "model": cfg.model,
        "recipe_source": recipe_source,
        "stages": [],
    }
    for name in cfg.stages:
        spec = STAGES[name]
        stage_cfg = copy.deepcopy(getattr(cfg, name))
        if name == "supervised" and cfg.pairs.sources:
            record["pairs"] = _run_pairs(out, cfg, adapters, state)
            _on_pairs(stage_cfg, out)
        if spec.optional and not stage_cfg.data:
            record["stages"].append({"name": name, "skipped": f"no {name} data given"})
            continue
        entry: dict[str, Any] = {"name": name, "data": stage_cfg.data}
        if spec.continues_pipeline:
            stage_cfg.model, stage_cfg.adapters, stage_cfg.merge = cfg.model, list(adapters), False
            log.info("convert: stage %s on %s with %d adapter(s)", name, cfg.model, len(adapters))
        else:  # the encoder made so far teaches the stage's student (by default: itself, cut)
            stage_cfg.teacher = str(_encoder_so_far(out / "stages" / TEACHER, cfg, adapters, state))
            entry["teacher"] = f"stages/{TEACHER}"
            log.info("convert: stage %s, teacher %s", name, stage_cfg.teacher)
        run_dir = out / "stages" / name
        start = time.perf_counter()
        # --resume continues the stages that started; the ones that did not start begin fresh
        with warnings.catch_warnings():  # check_inputs already warned about a too-short stage, once
            warnings.filterwarnings("ignore", message=".*will barely change the model")
            result = run_stage(spec, stage_cfg, run_dir, resume=resume and (run_dir / RUN_FILE).is_file())
        if spec.continues_pipeline:
            adapters.append(str(result.adapter))
            entry["adapter"] = f"adapters/{name}"
        else:
            student = result.merged
        if result.selected is not None:
            entry["selected"] = result.selected  # the outputs hold this evaluation's weights
        entry.update(
            config=to_dict(stage_cfg),
            metrics=result.metrics,
            seconds=round(time.perf_counter() - start, 1),  # this invocation's wall time
        )
        record["stages"].append(entry)
    record["recipe"] = pipeline_settings(cfg)

    if state.is_main_process:
        if student is not None:
            encoder = Encoder.from_pretrained(student, dtype="float32", device="cpu")
            record["teacher"] = f"stages/{TEACHER}"
            adapters = []  # they apply to the teacher, not to the student (see the module docstring)
        else:
            model, tokenizer = load_backbone(
                cfg.model, bidirectional=True, adapters=adapters or None, dtype="float32", device="cpu"
            )
            encoder = Encoder(model, tokenizer, pooling=cfg.pooling, matryoshka_dimensions=_matryoshka(cfg))
        if "simcse" in cfg.stages:  # int8 ranges from the corpus the encoder was trained on
            encoder.calibrate(calibration_sample(cfg.simcse))
        if cfg.pairs.sources:
            supervised = copy.deepcopy(cfg.supervised)
            _on_pairs(supervised, out)
            record["retrieval"] = retrieval_report(
                supervised, out / "stages" / PRE_SUPERVISED, encoder, cfg.sts_dev
            )
        _publish(out, encoder, adapters, record)
        if "retrieval" in record:
            log.info("convert: before/after on the dev split\n%s", retrieval_table(record["retrieval"]))
    state.wait_for_everyone()
    return out


def _on_pairs(stage_cfg, out: Path) -> None:
    """The supervised stage's data is the data engine's ``train.jsonl``; its checkpoint is selected on the
    engine's ``dev/`` split (unless the recipe names another retrieval dev set, or the split has no query)."""
    folder = out / "stages" / PAIRS
    stage_cfg.data = str(folder / "train.jsonl")
    if not stage_cfg.retrieval_dev and (folder / "dev").is_dir():
        stage_cfg.retrieval_dev = str(folder / "dev")


def _run_pairs(out: Path, cfg: PipelineConfig, adapters: list[str], state) -> dict[str, Any]:
    """Write the encoder made so far, then build (or resume, or keep) ``stages/pairs/``; its manifest's
    settings and counts for the record."""
    import torch

    from decoder2vec.pairs.pipeline import MANIFEST, build_pairs, check_out

    current = _encoder_so_far(out / "stages" / PRE_SUPERVISED, cfg, adapters, state)
    folder = out / "stages" / PAIRS
    if state.is_main_process:
        settings = pairs_settings(cfg, current)
        manifest = check_out(folder, settings)  # refuses other settings, naming each difference
        if not (manifest and manifest.get("complete") and (folder / "train.jsonl").is_file()):
            log.info("convert: building retrieval pairs from %s into %s", settings.sources, folder)
            threads = torch.get_num_threads()
            try:
                manifest = build_pairs(folder, settings)
            finally:
                torch.set_num_threads(threads)  # the generator sets its own; the stages keep theirs
    else:  # polling, not a collective barrier: one that waits through hours of generation would time out
        while not (folder / MANIFEST).is_file() or not read_record(folder / MANIFEST).get("complete"):
            time.sleep(10)
    state.wait_for_everyone()
    manifest = read_record(folder / MANIFEST)
    return {
        "folder": f"stages/{PAIRS}",
        "encoder": f"stages/{PRE_SUPERVISED}",
        "settings": manifest["settings"],
        "counts": manifest["counts"],
    }


def retrieval_report(supervised, before: Path, after, sts_dev: str | None = None) -> dict[str, Any]:
    """BM25, the encoder ``before`` the supervised stage and the encoder ``after`` it on the supervised stage's
    retrieval dev set (subsampled as its selection is), and both encoders on ``sts_dev`` when given."""
    from decoder2vec.encoding.encoder import Encoder
    from decoder2vec.evaluation.retrieval import evaluate_bm25, evaluate_retrieval, load_dev_set

    if not supervised.retrieval_dev:
        return {"skipped": "the pairs' dev split has no query left after filtering"}
    data = load_dev_set(
        supervised.retrieval_dev,
        supervised.retrieval_dev_split,
        supervised.retrieval_dev_max_queries,
        supervised.retrieval_dev_max_docs,
    )
    earlier = Encoder.from_pretrained(before, dtype="float32", device="cpu")
    instruction = supervised.retrieval_dev_instruction
    rows = {
        "bm25": evaluate_bm25(data),
        "before_supervised": evaluate_retrieval(earlier, data, query_instruction=instruction),
        "final": evaluate_retrieval(after, data, query_instruction=instruction),
    }
    report: dict[str, Any] = {
        "dev": supervised.retrieval_dev,
        "queries": len(data.queries),
        "documents": len(data.corpus),
        "instruction": instruction,
        "scores": {name: {m: row[m] for m in REPORT_METRICS} for name, row in rows.items()},
    }
    if sts_dev:
        from decoder2vec.evaluation.evaluators import evaluate_task
        from decoder2vec.evaluation.loaders import load_stsb
        from decoder2vec.evaluation.tasks import EvalTask

        task = EvalTask("STSBenchmark", "STS", load_stsb(sts_dev), split="dev")
        report["sts_dev"] = {
            "file": sts_dev,
            "before_supervised": evaluate_task(earlier, task)["cosine_spearman"],
            "final": evaluate_task(after, task)["cosine_spearman"],
        }
    return report


def retrieval_table(report: dict[str, Any]) -> str:
    """``report`` (:func:`retrieval_report`) as a small text table."""
    if "skipped" in report:
        return f"retrieval: skipped ({report['skipped']})"
    names = {"bm25": "BM25", "before_supervised": "before supervised", "final": "final encoder"}
    lines = [
        f"retrieval dev split {report['dev']} ({report['queries']} queries, {report['documents']} passages)",
        f"{'':<18} {'nDCG@10':>8} {'R@10':>8} {'MRR@10':>8}",
    ]
    for key, row in report["scores"].items():
        lines.append(f"{names[key]:<18} " + " ".join(f"{row[m]:>8.2f}" for m in REPORT_METRICS))
    if "sts_dev" in report:
        sts = report["sts_dev"]
        lines.append(
            f"STS-B dev Spearman: before supervised {sts['before_supervised']:.2f}, final {sts['final']:.2f}"
        )
    return "\n".join(lines)


def _matryoshka(cfg: PipelineConfig) -> list[int] | None:
    """The Matryoshka dimensions of the last contrastive stage of the pipeline's model that trained any."""
    stages = [getattr(cfg, name) for name in cfg.stages if STAGES[name].continues_pipeline]
    dims = [stage.matryoshka_dims for stage in stages if isinstance(stage, ContrastiveConfig)]
    return next((d for d in dims[::-1] if d), None)


def _encoder_so_far(folder: Path, cfg: PipelineConfig, adapters: list[str], state) -> Path:
    """``folder``: the encoder the stages so far made (the base with their adapters merged), written once; a
    resumed conversion keeps the one it wrote (it is the teacher of a final distill stage, whose identity
    holds its fingerprint, and the data engine's starting point)."""
    from decoder2vec.backbone.loading import load_backbone
    from decoder2vec.encoding.encoder import Encoder
    from decoder2vec.io import publish_folder

    def build(tmp: Path) -> None:
        model, tokenizer = load_backbone(
            cfg.model, bidirectional=True, adapters=adapters or None, dtype="float32", device="cpu"
        )
        encoder = Encoder(model, tokenizer, pooling=cfg.pooling, matryoshka_dimensions=_matryoshka(cfg))
        encoder.write_files(tmp)

    if state.is_main_process:
        publish_folder(folder, build)
    state.wait_for_everyone()
    return folder


def _publish(out: Path, encoder, adapters: list[str], record: dict[str, Any]) -> None:
    """Write the encoder files, ``adapters/`` and ``recipe.json`` into ``out`` (each renamed into place).

    Only what convert writes is replaced: ``stages/`` stays where it is, and files the user added to the
    folder (a README, a reports/ folder) are left alone.
    """

    def build(tmp: Path) -> None:
        encoder.write_files(tmp)
        for adapter in adapters:
            shutil.copytree(adapter, tmp / "adapters" / Path(adapter).parent.name)
        (tmp / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")

    replace_entries(out, build, owned=lambda name: name == "adapters" or is_encoder_file(name))
