"""Describe a Hugging Face byte-level BPE tokenizer in llama.cpp's GGUF tokenizer keys.

llama.cpp re-implements tokenization from the metadata: the vocabulary, merges, a named
pre-tokenizer regex (``tokenizer.ggml.pre``) and whether to add BOS/EOS. The pre-tokenizer is
recognised from the structure of ``tokenizer.json`` (not guessed from the model name), so the ids
llama.cpp produces are the ids the encoder was run with; anything unrecognised is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from decoder2vec.encoding.tokenization import special_token_frame
from decoder2vec.errors import ModelLoadError

# The split regexes of tokenizers whose Split + ByteLevel(use_regex=False) pre-tokenizer llama.cpp
# implements under these names (llama-vocab.cpp). Llama 3 groups digits by up to three, Qwen2 one by one.
_LLAMA3_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPLIT_REGEX_NAMES = {_LLAMA3_REGEX: "llama-bpe", _QWEN2_REGEX: "qwen2"}

# gguf.TokenType values (llama.cpp's llama_token_type)
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass(frozen=True)
class TokenizerSpec:
    """The ``tokenizer.ggml.*`` keys of one tokenizer."""

    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None
    add_bos: bool
    add_eos: bool

    def write(self, writer) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        for token_id, add in (
            (self.bos_id, writer.add_bos_token_id),
            (self.eos_id, writer.add_eos_token_id),
            (self.pad_id, writer.add_pad_token_id),
            (self.unk_id, writer.add_unk_token_id),
        ):
            if token_id is not None:
                add(token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)


def pre_tokenizer_name(pre_tokenizer: dict | None) -> str:
    """llama.cpp's name for a ``tokenizer.json`` pre-tokenizer, or a ModelLoadError describing it."""
    kind = (pre_tokenizer or {}).get("type")
    if kind == "ByteLevel" and pre_tokenizer.get("use_regex", True):
        return "gpt-2"  # GPT-2's built-in regex
    if kind == "Sequence":
        steps = pre_tokenizer["pretokenizers"]
        kinds = [step.get("type") for step in steps]
        if (
            kinds == ["Digits", "ByteLevel"]
            and steps[0].get("individual_digits")
            and steps[1].get("use_regex", True)
        ):
            return "smollm"  # every digit alone, then GPT-2's regex (SmolLM, StarCoder family)
        if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
            regex = steps[0].get("pattern", {}).get("Regex")
            if regex in SPLIT_REGEX_NAMES:
                return SPLIT_REGEX_NAMES[regex]
    raise ModelLoadError(
        f"the tokenizer's pre-tokenizer is not one llama.cpp is known to reproduce: {json.dumps(pre_tokenizer)[:300]}"
    )


def tokenizer_spec(tokenizer, *, vocab_size: int, append_eos: bool = False) -> TokenizerSpec:
    """Read the vocabulary, merges and special-token behaviour of a fast byte-level BPE tokenizer.

    ``vocab_size`` is the embedding matrix's row count; ids the tokenizer never produces (padding
    rows) get placeholder tokens so llama.cpp's vocabulary matches the matrix. ``append_eos`` is the
    encoder's own setting: it appends EOS after the text, which llama.cpp does via ``add_eos_token``.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelLoadError("only fast (tokenizers-backed) tokenizers can be exported to GGUF")
    data = json.loads(backend.to_str())
    model = data["model"]
    if model.get("type") != "BPE" or (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise ModelLoadError(
            f"only byte-level BPE tokenizers can be exported to GGUF yet; this one is {model.get('type')} "
            f"with a {(data.get('decoder') or {}).get('type')} decoder"
        )
    pre = pre_tokenizer_name(data.get("pre_tokenizer"))
    vocab = dict(model["vocab"])
    added = {entry["id"]: entry for entry in data.get("added_tokens", [])}
    for token_id, entry in added.items():
        vocab[entry["content"]] = token_id
    size = max(vocab_size, max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [UNUSED] * size
    for token, token_id in vocab.items():
        tokens[token_id] = token
        types[token_id] = NORMAL
    for token_id, entry in added.items():
        types[token_id] = CONTROL if entry.get("special") else USER_DEFINED
    # tokenizers writes merges as "a b" strings (old format) or [a, b] pairs (new format)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    prefix, suffix = special_token_frame(tokenizer)  # e.g. [bos] and []: what llama.cpp must add
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if prefix not in ([], [bos]) or suffix not in ([], [eos]):
        raise ModelLoadError(
            f"the tokenizer wraps texts in {prefix} ... {suffix}; llama.cpp can only add one BOS before "
            "and one EOS after"
        )
    if append_eos and suffix:
        raise ModelLoadError(
            "the tokenizer already appends EOS and the encoder appends another; llama.cpp adds one"
        )
    return TokenizerSpec(
        pre=pre,
        tokens=tokens,
        token_types=types,
        merges=merges,
        bos_id=bos,
        eos_id=eos,
        pad_id=tokenizer.pad_token_id,
        unk_id=tokenizer.unk_token_id,
        add_bos=prefix == [bos] and bos is not None,
        add_eos=(suffix == [eos] or append_eos) and eos is not None,
    )
