"""Shared fixtures: a hand-built BPE tokenizer and tiny random decoders of every supported family."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")
# Gemma2 has no SDPA path in transformers 5 (attention soft-capping); everything else runs both.
ATTENTION_IMPLEMENTATIONS = {family: ("eager", "sdpa") for family in FAMILIES} | {"gemma2": ("eager",)}
FAMILY_CASES = [(family, impl) for family in FAMILIES for impl in ATTENTION_IMPLEMENTATIONS[family]]

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
# Merges chosen so that "Query:" + "xylophone" tokenizes differently jointly than separately:
# ":x" is a token, so a joint tokenization swallows the text's first character into the instruction.
MERGES = [("t", "h"), ("th", "e"), ("i", "n"), ("in", "g"), (":", "x"), ("a", "n"), ("e", "r"), (" ", "t"), ("o", "n")]


def build_tokenizer(add_bos: bool = True):
    """A deterministic byte-free BPE without pre-tokenizer (merges may cross any boundary)."""
    from tokenizers import Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\t\n\r\x0b\x0c"]
    vocab = {token: i for i, token in enumerate(SPECIALS + chars)}
    for left, right in MERGES:
        vocab[left + right] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=MERGES, unk_token="<unk>"))
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def tiny_config(family: str, vocab_size: int, impl: str = "sdpa"):
    import transformers

    names = {
        "llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config",
        "gemma": "GemmaConfig", "gemma2": "Gemma2Config", "gemma3_text": "Gemma3TextConfig",
    }
    kwargs = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    if family in ("mistral", "gemma2", "gemma3_text"):
        kwargs["sliding_window"] = 128  # longer than any test input: sliding layers see everything
    config = getattr(transformers, names[family])(**kwargs)
    config._attn_implementation = impl
    return config


def save_tiny_model(folder: Path, family: str, impl: str = "sdpa", add_bos: bool = True, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer(add_bos)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tokenizer), impl))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """``factory(family, impl="sdpa", add_bos=True)`` -> folder of a saved tiny random causal LM."""
    cache: dict[tuple, Path] = {}

    def factory(family: str = "llama", impl: str = "sdpa", add_bos: bool = True) -> Path:
        key = (family, impl, add_bos)
        if key not in cache:
            cache[key] = save_tiny_model(tmp_path_factory.mktemp(f"{family}-{impl}"), family, impl, add_bos)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_factory) -> Path:
    return tiny_model_factory("llama")


SENTENCES = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "hi",
    "interesting things happen in the morning and the evening",
    "the rain in spain stays mainly in the plain",
    "one",
    "typing longer sentences makes padding matter",
]
