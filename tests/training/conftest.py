"""Training data fixtures (sentences, a corpus file, supervised pairs); the model is the root factory's
``tiny_word_llama``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the sun is hot",
    "ice is cold water",
    "the bird sings in a tree",
    "the sky is blue",
    "a red car drives fast",
    "the road in the city is big",
    "an old man reads a book",
    "the child plays ball in the park",
    "a woman eats an apple",
    "rain falls at night",
    "snow is white and cold",
    "the moon and a star light the dark sky",
    "the river flows to the sea",
    "a fish swims in the river",
    "the green tree is old",
    "a small house in the city",
    "the man eats bread",
    "the dog eats food",
    "a bird is in the sky",
    "the sea is blue and big",
    "a new car is red",
    "the day is hot",
]


def build_model(vocab_size: int, seed: int = 0):
    """The training tests' tiny causal Llama (the root factory's ``WORD_LLAMA`` settings)."""
    from tests.conftest import WORD_LLAMA, build_tokenizer, tiny_causal_lm

    options = {k: v for k, v in WORD_LLAMA.items() if k != "tokenizer"}
    tokenizer = build_tokenizer(kind="words")
    return tiny_causal_lm("llama", tokenizer, seed=seed, vocab_size=max(128, vocab_size), **options)


@pytest.fixture(autouse=True)
def one_thread():
    """The models here are tiny: one thread is fastest and does not fight other processes for the cores.
    (Restored afterwards, so tests elsewhere in the session keep their own setting.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tests.conftest import build_tokenizer

    return build_tokenizer(kind="words")


@pytest.fixture()
def text_corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(SENTENCES * 4) + "\n")
    return path


@pytest.fixture()
def pairs_file(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    rows = []
    for i in range(0, len(SENTENCES) - 2, 1):
        rows.append(
            {
                "query": SENTENCES[i],
                "positive": SENTENCES[i + 1],
                "negatives": [SENTENCES[i + 2]],
                "instruction": "find a similar sentence :" if i % 2 else "",
                "task": "t0" if i < 11 else "t1",
            }
        )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path
