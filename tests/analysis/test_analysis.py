"""The paper's two analyses on the tiny model: properties that must hold whatever the weights, plus the plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from decoder2vec.analysis.future_tokens import load_tuples, prefix_embeddings, run_future_tokens
from decoder2vec.analysis.layer_similarity import layer_similarity, run_layer_similarity
from decoder2vec.evaluation.errors import DataFormatError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000, path


def test_packaged_tuples_load() -> None:
    tuples = load_tuples()
    assert len(tuples) == 30
    assert all(t.a and t.b and t.c and t.d for t in tuples)


def test_prefix_pooling_covers_exactly_the_prefix_tokens(tiny_encoder) -> None:
    # by hand: mean of the states of A's tokens, located after BOS in the batch
    a, b = "The dog barked", "at the mail carrier."
    got = prefix_embeddings(tiny_encoder, [a], [b])
    batch = tiny_encoder.tokenize([f"{a} {b}"])
    n_a = len(tiny_encoder.tokenizer(a, add_special_tokens=False)["input_ids"])
    states = tiny_encoder.token_states(batch)
    expected = states[0, 1 : 1 + n_a].mean(dim=0)  # position 0 is the BOS token
    np.testing.assert_allclose(got[0], expected.numpy(), atol=1e-5)


def test_future_tokens_causal_cannot_see_the_continuation(tiny_encoder, tmp_path: Path) -> None:
    tuples = tmp_path / "t.jsonl"
    rows = [
        {"a": "The cat sat", "b": "on the mat.", "c": "upon the rug.", "d": "and the plane took off."},
        {"a": "A man is playing", "b": "a large flute.", "c": "a big flute.", "d": "football in the park."},
    ]
    tuples.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    was_causal = tiny_encoder.model.config.is_causal
    summary = run_future_tokens(tiny_encoder, tmp_path / "out", tuples_path=tuples)
    causal, bidir = summary["modes"]["causal"], summary["modes"]["bidirectional"]
    # causal: A's states never see B, C or D, so all three embeddings coincide
    assert np.allclose(causal["pos"] + causal["neg"], 1.0, atol=1e-5)
    assert causal["win_rate"] == 0.0
    # bidirectional: the continuation reaches A's states, so the embeddings move
    assert min(bidir["pos"] + bidir["neg"]) < 0.9999
    assert tiny_encoder.model.config.is_causal == was_causal  # attention mode restored
    assert_png(tmp_path / "out" / "future_tokens.png")
    assert json.loads((tmp_path / "out" / "future_tokens.json").read_text())["n_tuples"] == 2


def test_bad_tuple_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": "x", "b": "y", "c": "z", "d": "w"}\n{"a": "x", "b": "y"}\n')
    with pytest.raises(DataFormatError, match=r"t.jsonl:2:"):
        load_tuples(path)


def test_layer_similarity_invariants(tiny_encoder) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    mean, counts = layer_similarity(tiny_encoder, [text], max_positions=64)
    n = int(tiny_encoder.tokenize([text]).attention_mask.sum())
    assert mean.shape == (3, 64)  # embeddings + 2 layers
    assert counts[:n].tolist() == [1] * n and counts[n:].sum() == 0
    # the embedding layer does not depend on attention
    np.testing.assert_allclose(mean[0, :n], 1.0, atol=1e-6)
    # layer 1, last token: it already saw every token under causal attention, and its inputs (the
    # embeddings) do not depend on the mode, so its state is the same in both modes
    assert mean[1, n - 1] == pytest.approx(1.0, abs=1e-5)
    # earlier tokens do change once they can see the future
    assert mean[1, 0] < 0.9999
    assert np.isnan(mean[:, n:]).all()


def test_layer_similarity_plot_and_cli(tiny_byte_llama: Path, tmp_path: Path) -> None:
    from decoder2vec.cli import app

    texts = tmp_path / "texts.txt"
    texts.write_text("A plane is taking off.\nThe cat sat on the mat.\n")
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            "layer-similarity",
            "--model",
            str(tiny_byte_llama),
            "--out",
            str(tmp_path / "o"),
            "--texts",
            str(texts),
        ],
    )
    assert result.exit_code == 0, result.output
    assert_png(tmp_path / "o" / "layer_similarity.png")
    summary = json.loads((tmp_path / "o" / "layer_similarity.json").read_text())
    assert summary["n_texts"] == 2 and summary["mean_per_layer"][0] == pytest.approx(1.0)
    result = CliRunner().invoke(
        app, ["analyze", "future-tokens", "--model", str(tiny_byte_llama), "--out", str(tmp_path / "f")]
    )
    assert result.exit_code == 0, result.output
    assert_png(tmp_path / "f" / "future_tokens.png")
    missing = CliRunner().invoke(
        app,
        [
            "analyze",
            "future-tokens",
            "--model",
            str(tiny_byte_llama),
            "--out",
            str(tmp_path / "g"),
            "--tuples",
            str(tmp_path / "nope.jsonl"),
        ],
    )
    assert missing.exit_code != 0 and "nope.jsonl" in missing.output and "Traceback" not in missing.output


def test_run_layer_similarity_direct(tiny_encoder, tmp_path: Path) -> None:
    summary = run_layer_similarity(tiny_encoder, tmp_path, max_positions=8)
    assert summary["n_texts"] == 30 and summary["positions"] == 8
    assert_png(Path(summary["plot"]))
    assert np.array(summary["similarity"]).shape == (3, 8)  # embeddings + 2 layers, 8 positions
