"""Tiny random decoders that llama.cpp can run (a GPT-2-style byte-level BPE), from the root factory."""

from __future__ import annotations

from pathlib import Path

import pytest

EXPORTABLE = ("llama", "mistral", "qwen2", "qwen3")


def llama_cpp_or_skip():
    """The llama_cpp module; the test is skipped, saying why, only when it cannot be imported."""
    try:
        import llama_cpp
    except ImportError as exc:
        pytest.skip(
            f"llama_cpp cannot be imported ({exc}); install the extra: pip install 'decoder2vec[llamacpp]'"
        )
    return llama_cpp


@pytest.fixture(scope="session")
def byte_level_factory(tiny_model_factory):
    """``factory(family, add_bos=False)`` -> folder of a tiny random causal LM with a GPT-2-style
    byte-level BPE (the root factory's ``gpt2`` tokenizer) and randomised norms and biases (they start at
    1 and 0, so a misplaced one would not show)."""

    def factory(family: str, add_bos: bool = False) -> Path:
        return tiny_model_factory(family, add_bos=add_bos, tokenizer="gpt2", random_norms=True)

    return factory
