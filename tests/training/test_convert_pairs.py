"""``convert --corpus``: MNTP -> SimCSE -> the data engine (pairs) -> supervised in one command, resumable across
the whole path, with BM25 / before / after figures on the pairs' dev split."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from typer.testing import CliRunner

from decoder2vec.cli import app
from tests.pairs.test_pairs import write_docs

runner = CliRunner()

# the pairs settings of tests/pairs (a random tiny model's keyword queries survive them), few steps per stage
TINY = """
pooling: mean
mntp: {max_seq_length: 16, batch_size: 4, save_every: 1, log_every: 1, learning_rate: 1.0e-3}
simcse: {max_seq_length: 16, batch_size: 4, save_every: 1, log_every: 1, learning_rate: 5.0e-3}
pairs:
  {chunking: sentences, chunk_size: 160, min_passage_words: 5, templates: [keywords], max_new_tokens: 8,
   shard_size: 2, min_query_words: 1, dev_fraction: 0.3, seed: 3, threads: 1, progress: false,
   round_trip_k: 6, negatives: 1, keep_short: false, temperature: 1.0, structural: [title, first_sentence]}
supervised:
  {max_seq_length: 160, batch_size: 4, warmup_steps: 0, save_every: 1, log_every: 1, eval_every: 2,
   learning_rate: 1.0e-3, retrieval_dev_instruction: "find the passage"}
"""
STEPS = ["--mntp-steps", "2", "--simcse-steps", "2", "--supervised-steps", "4"]


def convert_args(model, out, recipe, corpus, docs) -> list[str]:
    return ["convert", "--model", str(model), "--out", str(out), "--config", str(recipe), *STEPS,
            "--mntp-data", str(corpus), "--simcse-data", str(corpus), "--corpus", str(docs)]  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    recipe = folder / "tiny.yaml"
    corpus = folder / "corpus.txt"
    from tests.training.conftest import SENTENCES

    corpus.write_text("\n".join(SENTENCES * 4) + "\n")
    sts = folder / "sts-dev.csv"  # the STS-B layout: genre, file, year, id, score, sentence 1, sentence 2
    rows = [(SENTENCES[i], SENTENCES[12 + i], (i * 37 % 50) / 10) for i in range(12)]  # no tied pairs
    sts.write_text("".join(f"main\tdev\t2024\t{i}\t{g}\t{a}\t{b}\n" for i, (a, b, g) in enumerate(rows)))
    recipe.write_text(TINY + f"sts_dev: {str(sts)!r}\n")
    return recipe, corpus, write_docs(folder / "docs.jsonl", n=8), rows


@pytest.fixture(scope="module")
def whole(tiny_llama, inputs, tmp_path_factory):
    """One uninterrupted conversion (the reference of the resume test)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("whole") / "encoder"
    result = runner.invoke(app, convert_args(tiny_llama, out, *inputs[:3]))
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_one_command_builds_pairs_trains_on_them_and_reports_before_and_after(whole, tiny_llama, inputs):
    from decoder2vec import Encoder
    from decoder2vec.evaluation.retrieval import evaluate_bm25, evaluate_retrieval, load_dev_set

    out, output = whole
    record = json.loads((out / "recipe.json").read_text())
    assert [s["name"] for s in record["stages"]] == ["mntp", "simcse", "supervised"]
    pairs = out / "stages" / "pairs"
    supervised = record["stages"][2]
    # the supervised stage trained on the data engine's output and selected on its dev split
    assert supervised["data"] == str(pairs / "train.jsonl")
    assert supervised["config"]["retrieval_dev"] == str(pairs / "dev")
    assert "selected" in supervised and (out / "adapters" / "supervised").is_dir()
    manifest = json.loads((pairs / "manifest.json").read_text())
    assert manifest["complete"] and record["pairs"]["counts"] == manifest["counts"]
    assert record["pairs"]["settings"]["generator"] == str(tiny_llama)  # the pipeline's model writes queries
    assert record["pairs"]["settings"]["templates"] == ["keywords"]
    assert record["recipe"]["pairs"]["sources"] == [str(inputs[2])]
    n_train = len((pairs / "train.jsonl").read_text().splitlines())
    assert n_train == sum(manifest["counts"]["train_pairs"].values()) > 0

    # the figures are those of independent evaluations of the three rankers on the same dev split
    encoder = Encoder.from_pretrained(out)
    before = Encoder.from_pretrained(out / "stages" / "pre_supervised")
    data = load_dev_set(pairs / "dev")
    report = record["retrieval"]
    assert report["queries"] == len(data.queries) > 0
    expected = {
        "bm25": evaluate_bm25(data),
        "before_supervised": evaluate_retrieval(before, data, query_instruction="find the passage"),
        "final": evaluate_retrieval(encoder, data, query_instruction="find the passage"),
    }
    for name, row in expected.items():
        for metric in ("ndcg_at_10", "recall_at_10", "mrr_at_10"):
            assert report["scores"][name][metric] == pytest.approx(row[metric], abs=1e-6), (name, metric)
    assert "BM25" in output and "before supervised" in output and "nDCG@10" in output
    # STS dev: the Spearman correlation of the cosines with the gold scores, as scipy computes it
    sts = inputs[3]
    for name, model in (("before_supervised", before), ("final", encoder)):
        a, b = model.encode([r[0] for r in sts]), model.encode([r[1] for r in sts])
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        rho = 100 * spearmanr(cosine, [r[2] for r in sts])[0]
        assert report["sts_dev"][name] == pytest.approx(rho, abs=1e-3), name
    assert "STS-B dev Spearman" in output
    # the encoder before the supervised stage is the base with the MNTP and SimCSE adapters, and the
    # supervised stage moved it
    texts = [json.loads(line)["text"] for line in (pairs / "dev" / "corpus.jsonl").read_text().splitlines()]
    assert not np.allclose(before.encode(texts), encoder.encode(texts), atol=1e-4)


def test_a_changed_pairs_setting_is_refused_on_resume_by_name(whole):
    out, _ = whole
    args = ["convert", "--out", str(out), "--resume", "--set", "pairs.negatives=2"]
    result = runner.invoke(app, [*args, "--set", "pairs.templates=[question]"])
    assert result.exit_code == 1
    assert "pairs.negatives: 1 (saved) vs 2 (now)" in result.output, result.output
    assert "pairs.templates" in result.output
    # a runtime knob of the engine is no difference; a finished conversion resumes to the same encoder
    weights = (out / "model.safetensors").read_bytes()
    same = runner.invoke(app, ["convert", "--out", str(out), "--resume", "--set", "pairs.threads=2"])
    assert same.exit_code == 0, same.output
    assert (out / "model.safetensors").read_bytes() == weights


def _killed(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


@pytest.mark.slow
def test_sigkill_in_pairs_then_in_supervised_resumes_to_the_uninterrupted_result(
    whole, tiny_llama, inputs, tmp_path
):
    from decoder2vec.training.pipeline import convert, recorded_pipeline

    reference, _ = whole
    out = tmp_path / "encoder"
    recipe, corpus, docs, _ = inputs
    cli = convert_args(tiny_llama, out, recipe, corpus, docs)
    head = """
        import os, signal, sys, torch
        torch.set_num_threads(1)  # bitwise equality needs the same reduction order
        from typer.testing import CliRunner
        from decoder2vec.cli import app
    """
    # 1. killed once the second shard of generated queries is written
    _killed(
        head
        + f"""
        import decoder2vec.pairs.pipeline as P
        write = P.write_file_atomic
        def dying(path, data):
            write(path, data)
            if "shard-00001" in str(path):
                os.kill(os.getpid(), signal.SIGKILL)
        P.write_file_atomic = dying
        CliRunner().invoke(app, {cli!r}, catch_exceptions=False)
    """
    )
    shards = sorted(p.name for p in (out / "stages" / "pairs" / "generated").iterdir())
    assert shards == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert not (out / "stages" / "pairs" / "train.jsonl").exists()
    first = out / "stages" / "pairs" / "generated" / "shard-00000.jsonl"
    written = first.stat().st_mtime_ns
    # 2. resumed (generation continues from the third shard), killed after supervised step 2
    _killed(
        head
        + f"""
        import decoder2vec.training.recipes.supervised as S
        run = S.SupervisedRecipe.run
        def kill(step):
            if step == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        S.SupervisedRecipe.run = lambda self, out, callbacks=(), **kw: run(self, out, callbacks=[kill], **kw)
        CliRunner().invoke(app, ["convert", "--out", {str(out)!r}, "--resume"], catch_exceptions=False)
    """
    )
    assert (out / "stages" / "pairs" / "train.jsonl").is_file() and not (out / "recipe.json").exists()
    assert first.stat().st_mtime_ns == written  # the finished shards were reused, not generated again
    assert sorted((out / "stages" / "supervised").glob("checkpoint-*"))
    # 3. resumed to the end, here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg, source = recorded_pipeline(out)
        convert(cfg, out, resume=True, recipe_source=source)
    finally:
        torch.set_num_threads(threads)
    for name in ("train.jsonl", "dev/queries.jsonl", "dev/corpus.jsonl", "dev/qrels/dev.tsv"):
        assert (out / "stages/pairs" / name).read_bytes() == (reference / "stages/pairs" / name).read_bytes()
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    got, want = (json.loads((d / "recipe.json").read_text()) for d in (out, reference))
    for key in ("scores", "queries", "documents"):
        assert got["retrieval"][key] == want["retrieval"][key]
    assert got["pairs"]["counts"] == want["pairs"]["counts"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("empty", "holds no texts"),
        ("missing", "missing.jsonl"),
        ("pairs.templates=[poem]", "--templates: unknown poem"),
        ("supervised.data=elsewhere.jsonl", "both give the supervised stage's data"),
        ("stages=[mntp, simcse]", "the pairs train the supervised stage"),
        ("sts_dev=nowhere.csv", "nowhere.csv"),
    ],
)
def test_bad_corpus_or_settings_are_refused_before_any_model_loads(
    change, message, tiny_llama, inputs, tmp_path, monkeypatch
):
    from decoder2vec.backbone import loading

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(loading, "load_backbone", no_model)
    recipe, corpus, docs, _ = inputs
    if change == "empty":
        docs = tmp_path / "empty.jsonl"
        docs.write_text("\n\n")
    elif change == "missing":
        docs = tmp_path / "missing.jsonl"
    out = tmp_path / "encoder"
    args = convert_args(tiny_llama, out, recipe, corpus, docs)
    if "=" in change:
        args += ["--set", change]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert not out.exists()


def test_corpus_on_another_recipe_adds_the_retrieval_recipes_pairs_and_supervised_settings():
    from decoder2vec.training.config import load_pipeline, with_corpus

    retrieval, cpu = load_pipeline("retrieval"), load_pipeline("cpu-2h")
    assert retrieval.mntp == cpu.mntp and retrieval.simcse == cpu.simcse  # cpu-2h's stages unchanged
    assert retrieval.stages == ["mntp", "simcse", "supervised"] and retrieval.pairs.sources == ["wiki"]
    added = load_pipeline("cpu-2h", ["docs.jsonl"])
    assert added.stages == ["mntp", "simcse", "supervised"]
    assert added.pairs.sources == ["docs.jsonl"] and added.mntp == cpu.mntp
    assert added.supervised == retrieval.supervised
    assert dataclass_dict(added.pairs, "sources") == dataclass_dict(retrieval.pairs, "sources")
    assert (retrieval.pairs.templates, retrieval.pairs.negatives, retrieval.pairs.dev_fraction) == (
        ["question", "keywords"],
        3,
        0.1,
    )
    assert retrieval.supervised.retrieval_dev_max_queries == 1000 and retrieval.supervised.max_steps == 600
    assert load_pipeline(None, ["wiki"]).stages == ["mntp", "simcse", "supervised"]
    # a final distill stage stays last
    raw = with_corpus({"stages": ["mntp", "simcse", "distill"]}, ["wiki"])
    assert raw["stages"] == ["mntp", "simcse", "supervised", "distill"]


def dataclass_dict(obj, *without: str) -> dict:
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(obj).items() if k not in without}


def test_the_engine_writes_with_the_pipelines_model_and_current_is_the_encoder_so_far():
    from decoder2vec.training.config import PipelineConfig
    from decoder2vec.training.pipeline import pairs_settings

    cfg = PipelineConfig(model="some-decoder")
    cfg.pairs.filter_model, cfg.pairs.miner = "current", "bm25"
    settings = pairs_settings(cfg, "/out/stages/pre_supervised")
    assert (settings.generator, settings.filter_model, settings.miner) == (
        "some-decoder",
        "/out/stages/pre_supervised",
        "bm25",
    )
    cfg.pairs.generator = "writer"
    assert pairs_settings(cfg).generator == "writer"
