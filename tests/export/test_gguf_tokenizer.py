"""Recognising a tokenizer.json pre-tokenizer as one llama.cpp implements (by structure, not by name)."""

from __future__ import annotations

import pytest

from decoder2vec.errors import ModelLoadError
from decoder2vec.export.gguf_tokenizer import _LLAMA3_REGEX, _QWEN2_REGEX, pre_tokenizer_name


def split_then_bytes(regex: str) -> dict:
    return {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    }


@pytest.mark.parametrize(
    ("pre_tokenizer", "name"),
    [
        ({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, "gpt-2"),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Digits", "individual_digits": True},
                    {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
                ],
            },
            "smollm",
        ),
        (split_then_bytes(_LLAMA3_REGEX), "llama-bpe"),
        (split_then_bytes(_QWEN2_REGEX), "qwen2"),
    ],
)
def test_known_pre_tokenizers(pre_tokenizer, name):
    assert pre_tokenizer_name(pre_tokenizer) == name


@pytest.mark.parametrize(
    "pre_tokenizer",
    [None, {"type": "Metaspace", "replacement": "▁"}, split_then_bytes(r"\s+|\w+"), {"type": "Whitespace"}],
)
def test_unknown_pre_tokenizers_are_refused(pre_tokenizer):
    with pytest.raises(ModelLoadError, match="pre-tokenizer"):
        pre_tokenizer_name(pre_tokenizer)
