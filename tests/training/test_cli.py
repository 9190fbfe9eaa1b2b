import json

import pytest
import torch
from typer.testing import CliRunner

from decoder2vec.cli import app
from decoder2vec.training.config import RECIPE_DIR, MNTPConfig, load_pipeline, load_stage
from decoder2vec.training.errors import TrainingError

runner = CliRunner()

TINY_RECIPE = """
pooling: mean
mntp: {max_seq_length: 16, batch_size: 4, save_every: 2, log_every: 1, learning_rate: 1.0e-3}
simcse: {max_seq_length: 16, batch_size: 4, save_every: 2, log_every: 1}
supervised: {max_seq_length: 16, batch_size: 4, mini_batch_size: 2, warmup_steps: 0, save_every: 2, log_every: 1}
"""


def test_convert_end_to_end(tiny_word_llama, text_corpus, pairs_file, tmp_path):
    from decoder2vec import Encoder
    from decoder2vec.backbone.loading import load_backbone
    from decoder2vec.encoding.pooling import pool
    from decoder2vec.encoding.tokenization import tokenize_batch

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    out = tmp_path / "encoder"
    args = [
        "convert",
        "--model",
        str(tiny_word_llama),
        "--out",
        str(out),
        "--config",
        str(recipe),
        "--mntp-steps",
        "2",
        "--simcse-steps",
        "2",
        "--supervised-steps",
        "2",
        "--mntp-data",
        str(text_corpus),
        "--simcse-data",
        str(text_corpus),
        "--supervised-data",
        str(pairs_file),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "recipe.json").read_text())
    assert [s["name"] for s in record["stages"]] == ["mntp", "simcse", "supervised"]
    assert record["stages"][0]["data"] == str(text_corpus) and record["stages"][2]["data"] == str(pairs_file)
    assert record["recipe"]["mntp"]["max_steps"] == 2
    for stage in ("mntp", "simcse", "supervised"):
        assert (out / "adapters" / stage / "adapter_model.safetensors").is_file()
        assert (out / "stages" / stage / "metrics.jsonl").is_file()
    assert (out / "modules.json").is_file()  # sentence-transformers files

    # the folder is the base model with the three adapters merged in order
    encoder = Encoder.from_pretrained(out)
    texts = ["the cat sat on the mat", "a dog ran"]
    model, tok = load_backbone(
        tiny_word_llama, adapters=[out / "adapters" / s for s in ("mntp", "simcse", "supervised")]
    )
    batch = tokenize_batch(tok, texts, max_length=32)
    with torch.no_grad():
        expected = pool(
            model(**batch.model_inputs()).last_hidden_state, batch.pool_mask, batch.attention_mask, "mean"
        )
    assert torch.allclose(torch.from_numpy(encoder.encode(texts)), expected, atol=1e-5)
    base, _ = load_backbone(tiny_word_llama)
    with torch.no_grad():
        untrained = pool(
            base(**batch.model_inputs()).last_hidden_state, batch.pool_mask, batch.attention_mask, "mean"
        )
    assert not torch.allclose(expected, untrained, atol=1e-4)

    # rerunning needs --resume; resuming a finished conversion trains nothing more
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--resume" in again.output
    lines = (out / "stages" / "mntp" / "metrics.jsonl").read_text()
    resumed = runner.invoke(app, args + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (out / "stages" / "mntp" / "metrics.jsonl").read_text() == lines
    assert (
        json.loads((out / "recipe.json").read_text())["stages"][0]["metrics"]["step"] == 2
    )  # kept from the checkpoint
    assert torch.allclose(torch.from_numpy(Encoder.from_pretrained(out).encode(texts)), expected, atol=1e-5)


def test_train_commands_report_bad_input(tiny_word_llama, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    result = runner.invoke(
        app,
        [
            "train",
            "mntp",
            "--model",
            str(tiny_word_llama),
            "--data",
            str(empty),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1 and "is empty" in result.output
    missing = tmp_path / "pairs.jsonl"
    missing.write_text('{"query": "q", "negatives": ["n"]}\n')
    result = runner.invoke(
        app,
        [
            "train",
            "supervised",
            "--model",
            str(tiny_word_llama),
            "--data",
            str(missing),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1 and "no 'positive' field" in result.output
    assert not (tmp_path / "o").exists()


def test_train_mntp_command(tiny_word_llama, text_corpus, tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "mntp",
            "--model",
            str(tiny_word_llama),
            "--data",
            str(text_corpus),
            "--out",
            str(tmp_path / "m"),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--max-seq-length",
            "16",
            "--mask-strategy",
            "all_mask",
            "--merge",
        ],
    )
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "m" / "run.json").read_text())
    assert run["recipe"]["mask_strategy"] == "all_mask" and run["recipe"]["max_steps"] == 2
    assert (tmp_path / "m" / "merged" / "config.json").is_file()
    result = runner.invoke(
        app,
        [
            "train",
            "simcse",
            "--model",
            str(tiny_word_llama),
            "--data",
            str(text_corpus),
            "--out",
            str(tmp_path / "s"),
            "--steps",
            "1",
            "--batch-size",
            "4",
            "--adapter",
            str(tmp_path / "m" / "adapter"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "encoder" / "modules.json").is_file()


def test_shipped_recipes_hold_the_paper_settings():
    names = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
    assert {"llm2vec-llama", "llm2vec-mistral", "llm2vec-supervised", "cpu-smoke"} <= set(names)
    for name in names:
        load_pipeline(name)  # every shipped recipe parses into the config classes
    llama, mistral, sup = (
        load_pipeline("llm2vec-llama"),
        load_pipeline("llm2vec-mistral"),
        load_pipeline("llm2vec-supervised"),
    )
    assert (llama.mntp.mask_strategy, llama.mntp.mask_probability, llama.mntp.mask_token) == (
        "bert",
        0.2,
        "blank",
    )
    assert (mistral.mntp.mask_strategy, mistral.mntp.mask_probability) == ("all_mask", 0.8)
    assert (llama.mntp.max_seq_length, llama.mntp.batch_size, llama.mntp.max_steps) == (512, 32, 1000)
    assert (
        llama.simcse.temperature,
        llama.simcse.attention_dropout,
        llama.simcse.batch_size,
        llama.simcse.max_seq_length,
    ) == (0.05, 0.3, 128, 128)
    assert (llama.simcse.lora.r, llama.simcse.lora.alpha, llama.simcse.lora.dropout) == (16, 32, 0.05)
    assert (sup.supervised.temperature, sup.supervised.learning_rate, sup.supervised.batch_size) == (
        0.02,
        2e-4,
        512,
    )
    assert sup.stages == ["mntp", "supervised"]
    assert load_stage(MNTPConfig, "llm2vec-mistral", "mntp").mask_probability == 0.8


def test_unknown_recipe_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mntp: {mask_prob: 0.3}\n")
    with pytest.raises(TrainingError, match="unknown key.*mask_prob"):
        load_pipeline(bad)


def test_train_resume_reads_the_recorded_settings(tiny_word_llama, text_corpus, tmp_path):
    out = tmp_path / "m"
    flags = ["--model", str(tiny_word_llama), "--data", str(text_corpus), "--batch-size", "2"]
    flags += ["--max-seq-length", "16", "--steps", "2", "--mask-strategy", "all_mask"]
    first = runner.invoke(app, ["train", "mntp", *flags, "--out", str(out)])
    assert first.exit_code == 0, first.output
    lines = (out / "metrics.jsonl").read_text()
    adapter = (out / "adapter" / "adapter_model.safetensors").read_bytes()

    # no flags: the run's own settings (the defaults would be another model, data and schedule)
    resumed = runner.invoke(app, ["train", "mntp", "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (out / "metrics.jsonl").read_text() == lines  # finished: nothing trained again
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == adapter

    # a flag that disagrees with the recorded run is named; another stage's command is refused
    changed = runner.invoke(app, ["train", "mntp", "--out", str(out), "--resume", "--steps", "3"])
    assert changed.exit_code == 1 and "max_steps" in changed.output
    other = runner.invoke(app, ["train", "simcse", "--out", str(out), "--resume"])
    assert other.exit_code == 1 and "'mntp' run" in other.output
    assert (out / "metrics.jsonl").read_text() == lines
