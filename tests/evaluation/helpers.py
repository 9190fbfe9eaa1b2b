"""Test helpers: a tiny random Llama saved with a byte-level BPE tokenizer, and a fake encoder.

Everything is built here, offline, in well under a second of CPU; nothing touches the network.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

_CORPUS = [
    "A plane is taking off.",
    "An air plane is taking off.",
    "A man is playing a large flute.",
    "A man is spreading shredded cheese on a pizza.",
    "The cat sat on the mat while the dog slept.",
    "Three boys are playing football in the park.",
    "Rewrite the sentence: Rewritten sentence:",
    "Retrieve semantically similar text.",
    "The quick brown fox jumps over the lazy dog.",
    "She bought new shoes for the wedding yesterday.",
]


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """Save a 2-layer random Llama and a fast BPE tokenizer (with BOS) into ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 5, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        bos_token_id=bos,
        eos_token_id=tok.token_to_id("</s>"),
        pad_token_id=tok.token_to_id("<pad>"),
    )
    LlamaModel(config).save_pretrained(folder)
    return folder


class HashEncoder:
    """A deterministic fake: each (instruction, text) maps to a fixed random unit-free vector.

    It records every call so tests can check which instruction reached which text.
    """

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls: list[tuple[list[str], object]] = []

    def encode(self, texts, *, instruction=None, batch_size=32, normalize=False, show_progress_bar=None):
        texts = list(texts)
        self.calls.append((texts, instruction))
        rows = []
        for t in texts:
            seed = int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)
            rows.append(np.random.default_rng(seed).normal(size=self.dim))
        out = np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)
        if normalize:
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out
