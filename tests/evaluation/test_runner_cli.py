"""``decoder2vec eval`` end to end on a tiny model and a hand-made data dir; baselines; error handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decoder2vec.evaluation.errors import DataFormatError
from decoder2vec.evaluation.runner import load_variants, markdown_table, resolve_task, write_json_atomic

STS_ROWS = [
    ("A plane is taking off.", "An air plane is taking off.", 5.0),
    ("A man is playing a large flute.", "A man is playing a flute.", 3.8),
    ("The cat sat on the mat.", "Three boys are playing football.", 0.2),
    ("She bought new shoes.", "She bought shoes for the wedding.", 3.0),
    ("The quick brown fox jumps.", "A dog slept.", 0.8),
]


def make_data_dir(root: Path) -> Path:
    (root / "stsbenchmark").mkdir(parents=True)
    (root / "sick2014").mkdir()
    (root / "stsbenchmark" / "sts-test.csv").write_text(
        "".join(f"g\tf\t2012\t{i:04d}\t{s}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(STS_ROWS)),
        encoding="utf-8",
    )
    sick = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
    sick += [f"{i}\t{a}\t{b}\t{1 + 0.8 * s}\tNEUTRAL" for i, (a, b, s) in enumerate(STS_ROWS)]
    (root / "sick2014" / "SICK_test_annotated.txt").write_text("\n".join(sick) + "\n", encoding="utf-8")
    custom = root / "mypairs"
    custom.mkdir()
    (custom / "task.json").write_text(
        json.dumps({"type": "pair_classification", "instruction": "Retrieve paraphrases"})
    )
    (custom / "test.jsonl").write_text(
        "\n".join(json.dumps({"sentence1": a, "sentence2": b, "label": int(s > 2.5)}) for a, b, s in STS_ROWS)
        + "\n"
    )
    return root


def app():
    from decoder2vec.cli import app as main_app

    return main_app


def test_eval_cli_writes_results_for_model_and_every_baseline(tmp_path: Path, tiny_byte_llama: Path) -> None:
    data = make_data_dir(tmp_path / "data")
    report = tmp_path / "report"
    result = CliRunner().invoke(
        app(),
        [
            "eval",
            "--model",
            str(tiny_byte_llama),
            "--tasks",
            "stsb,sickr,mypairs",
            "--data-dir",
            str(data),
            "--report",
            str(report),
            "--baseline",
            "all",
            "--batch-size",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads((report / "results.json").read_text())
    rows = payload["results"]
    variants = ["model", "causal-mean", "causal-weighted_mean", "causal-last_token", "echo"]
    assert [(r["variant"], r["task"]) for r in rows] == [
        (v, t) for v in variants for t in ("stsb", "sickr", "mypairs")
    ]
    for r in rows:
        assert -100.0 <= r["scores"][r["main_score"]] <= 100.0
        assert r["seconds"] >= 0 and r["n"] == 5
    assert rows[0]["instruction"] == "Retrieve semantically similar text: "
    assert (
        rows[2]["instruction"] == "Retrieve paraphrases: "
    )  # custom instructions are formatted the same way
    # bidirectional and causal variants of one checkpoint do not produce identical scores
    stsb = {r["variant"]: r["scores"]["cosine_spearman"] for r in rows if r["task"] == "stsb"}
    assert len({round(v, 6) for v in stsb.values()}) > 1
    md = (report / "results.md").read_text()
    assert "| echo |" in md and "stsb (cosine_spearman)" in md
    assert not list(report.glob(".*tmp"))  # the atomic write left no temp file behind


def test_baselines_are_causal_and_differ_in_pooling(tiny_byte_llama: Path) -> None:
    variants = list(load_variants(str(tiny_byte_llama), ["causal-mean", "causal-last_token", "echo"]))
    assert [v.name for v in variants] == ["model", "causal-mean", "causal-last_token", "echo"]
    assert variants[0].encoder.bidirectional is True
    assert variants[0].encoder.model.config.is_causal is False
    for v in variants[1:]:
        inner = getattr(v.encoder, "encoder", v.encoder)
        assert inner.model.config.is_causal is True
    assert variants[2].encoder.pooling == "last_token"
    with pytest.raises(ValueError, match="unknown baseline"):
        list(load_variants(str(tiny_byte_llama), ["causal-max"]))


def test_eval_cli_reports_data_errors_without_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app(),
        [
            "eval",
            "--model",
            "unused",
            "--tasks",
            "stsb",
            "--data-dir",
            str(tmp_path),
            "--report",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code != 0
    assert "sts-test.csv" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r" / "results.json").exists()


def test_unknown_task_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="unknown task 'mteb-foo'.*stsb"):
        resolve_task("mteb-foo", tmp_path)


def test_no_instructions_flag_clears_instruction(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "d")
    assert resolve_task("stsb", data).instruction
    assert resolve_task("stsb", data, use_instructions=False).instruction is None
    assert resolve_task("mypairs", data, use_instructions=False).instruction is None


def test_markdown_table_layout() -> None:
    rows = [
        {
            "variant": "model",
            "task": "stsb",
            "main_score": "cosine_spearman",
            "scores": {"cosine_spearman": 71.234},
        },
        {
            "variant": "echo",
            "task": "stsb",
            "main_score": "cosine_spearman",
            "scores": {"cosine_spearman": 60.0},
        },
    ]
    assert markdown_table(rows).splitlines() == [
        "| variant | stsb (cosine_spearman) |",
        "|---|---:|",
        "| model | 71.23 |",
        "| echo | 60.00 |",
    ]


def test_write_json_atomic_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_json_atomic(path, {"ok": 1})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"bad": float("nan")})  # NaN is not JSON: refused, old file kept
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
