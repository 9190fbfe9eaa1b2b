"""The one tiny-model factory: hand-built tokenizers and tiny random decoders of every supported family.

Tokenizers (``kind``): ``bpe`` a byte-free BPE without pre-tokenizer whose merges cross the
instruction/text boundary (tokenization tests), ``words`` a word-level vocabulary (training: MNTP can
learn it in a few steps), ``bytes`` a trained byte-level BPE (evaluation). Everything is built offline
in well under a second.
"""

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
MERGES = [
    ("t", "h"),
    ("th", "e"),
    ("i", "n"),
    ("in", "g"),
    (":", "x"),
    ("a", "n"),
    ("e", "r"),
    (" ", "t"),
    ("o", "n"),
]


WORD_VOCAB = [
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

BYTE_CORPUS = [
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


def build_tokenizer(add_bos: bool = True, kind: str = "bpe"):
    """A deterministic tokenizer of ``kind`` (see the module docstring)."""
    from tokenizers import Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    if kind == "words":
        return _word_tokenizer()
    if kind == "gpt2":
        return _gpt2_tokenizer(add_bos)
    if kind == "bytes":
        return _byte_tokenizer()

    chars = [c for c in string.printable if c not in "\t\n\r\x0b\x0c"]
    vocab = {token: i for i, token in enumerate(SPECIALS + chars)}
    for left, right in MERGES:
        vocab[left + right] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=MERGES, unk_token="<unk>"))
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    words = sorted(set(WORD_VOCAB + ["an", "and", "at", "to"]))
    vocab = {tok: i for i, tok in enumerate(specials + ["_"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(BYTE_CORPUS * 5, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


GPT2_SPECIALS = ["<|endoftext|>", "<s>", "</s>"]


def _gpt2_tokenizer(add_bos: bool):
    """A GPT-2-style byte-level BPE (256 byte tokens + ~200 merges) that llama.cpp can reproduce."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = SENTENCES + [
        "Numbers like 12345 and 3.14 -- don't they matter?",
        "the river city grew around its port, trading grain, salt and timber",
        "Ünïcödé, emoji and\ttabs\nnewlines",
    ]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=480,
        special_tokens=GPT2_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus * 3, trainer)
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<|endoftext|>"
    )


def tiny_config(family: str, vocab_size: int, impl: str = "sdpa", **overrides):
    import transformers

    names = {
        "llama": "LlamaConfig",
        "mistral": "MistralConfig",
        "qwen2": "Qwen2Config",
        "qwen3": "Qwen3Config",
        "gemma": "GemmaConfig",
        "gemma2": "Gemma2Config",
        "gemma3_text": "Gemma3TextConfig",
    }
    kwargs = {
        "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 256,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    }  # fmt: skip
    if family in ("mistral", "gemma2", "gemma3_text"):
        kwargs["sliding_window"] = 128  # longer than any test input: sliding layers see everything
    config = getattr(transformers, names[family])(**{**kwargs, **overrides})
    config._attn_implementation = impl
    return config


def tiny_causal_lm(family: str, tokenizer, impl: str = "sdpa", seed: int = 0, **overrides):
    """A random causal LM sized for ``tokenizer`` (special-token ids taken from it)."""
    from transformers import AutoModelForCausalLM

    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    torch.manual_seed(seed)
    vocab_size = overrides.pop("vocab_size", len(tokenizer))
    return AutoModelForCausalLM.from_config(tiny_config(family, vocab_size, impl, **{**ids, **overrides}))


def save_tiny_model(
    folder: Path,
    family: str = "llama",
    impl: str = "sdpa",
    add_bos: bool = True,
    seed: int = 0,
    tokenizer: str = "bpe",
    bare: bool = False,
    random_norms: bool = False,
    **overrides,
) -> Path:
    """Save a tiny random model (``bare``: the transformer without LM head; ``random_norms``: 1-D weights
    drawn from U(0.5, 1.5) instead of ones and zeros) and its tokenizer."""
    tok = build_tokenizer(add_bos, kind=tokenizer)
    model = tiny_causal_lm(family, tok, impl, seed, **overrides)
    if random_norms:
        with torch.no_grad():
            for param in model.parameters():
                if param.ndim == 1:
                    param.uniform_(0.5, 1.5)
    (model.model if bare else model).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# The training tests' model: a word-level vocabulary padded to 128 rows, untied, and a larger init so a
# frozen LM head can express confident predictions (MNTP visibly learns in a few steps).
WORD_LLAMA = {"tokenizer": "words", "tie_word_embeddings": False, "initializer_range": 0.15}


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """``factory(family="llama", impl="sdpa", add_bos=True, tokenizer="bpe", bare=False, **config)`` ->
    folder of a saved tiny random model (cached per argument set for the session)."""
    cache: dict[tuple, Path] = {}

    def factory(family: str = "llama", impl: str = "sdpa", add_bos: bool = True, **options) -> Path:
        key = (family, impl, add_bos, tuple(sorted(options.items())))
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"{family}-{impl}")
            cache[key] = save_tiny_model(folder, family, impl, add_bos, **options)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_factory) -> Path:
    """Llama with the boundary-crossing BPE tokenizer."""
    return tiny_model_factory("llama")


@pytest.fixture(scope="session")
def tiny_word_llama(tiny_model_factory) -> Path:
    """Llama with the word-level tokenizer (training tests)."""
    return tiny_model_factory("llama", vocab_size=128, **WORD_LLAMA)


@pytest.fixture(scope="session")
def tiny_byte_llama(tiny_model_factory) -> Path:
    """A bare Llama with the byte-level BPE tokenizer (evaluation, analysis and probing tests)."""
    return tiny_model_factory("llama", tokenizer="bytes", bare=True)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_byte_llama: Path):
    from decoder2vec import Encoder

    return Encoder.from_pretrained(str(tiny_byte_llama), max_length=256)


@pytest.fixture
def hash_encoder():
    from tests.evaluation.helpers import HashEncoder

    return HashEncoder()


SENTENCES = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "hi",
    "interesting things happen in the morning and the evening",
    "the rain in spain stays mainly in the plain",
    "one",
    "typing longer sentences makes padding matter",
]
