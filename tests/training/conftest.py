"""Tiny offline fixtures: a word-level tokenizer and a 2-layer Llama, saved as an HF folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "ran",
    "in",
    "park",
    "sun",
    "is",
    "hot",
    "cold",
    "water",
    "ice",
    "bird",
    "sings",
    "tree",
    "green",
    "sky",
    "blue",
    "red",
    "car",
    "drives",
    "fast",
    "slow",
    "road",
    "city",
    "big",
    "small",
    "house",
    "old",
    "new",
    "man",
    "woman",
    "child",
    "plays",
    "ball",
    "reads",
    "book",
    "eats",
    "food",
    "apple",
    "bread",
    "rain",
    "falls",
    "snow",
    "white",
    "night",
    "day",
    "moon",
    "star",
    "light",
    "dark",
    "river",
    "flows",
    "sea",
    "fish",
    "swims",
]

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


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {
        tok: i for i, tok in enumerate(specials + ["_"] + sorted(set(WORDS + ["an", "and", "at", "to"])))
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def build_model(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=max(128, vocab_size),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        initializer_range=0.15,  # larger than default so a frozen LM head can express confident predictions
    )
    return LlamaForCausalLM(config)


@pytest.fixture(autouse=True)
def one_thread():
    """The models here are tiny: one thread is fastest and does not fight other processes for the cores.
    (Restored afterwards, so tests elsewhere in the session keep their own setting.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An HF folder (config, weights, tokenizer) that ``load_backbone`` can read offline."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer()
    build_model(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


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
