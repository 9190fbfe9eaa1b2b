"""Instruction-aware tokenization that knows exactly which tokens belong to the text.

The instruction and the text are tokenized *separately* and their ids concatenated, so a BPE merge
across the boundary (``"Query:" + "x"`` becoming one token) can never shift the pooling mask, and
truncation cuts the text, never the instruction. Layout of one sequence::

    [tokenizer's prefix specials (e.g. BOS)] [instruction] [text] [eos if append_eos] [suffix specials]
     `------------- not pooled when an instruction is given -----'  `--------- pooled ---------------'

Without an instruction every real token is pooled (as sentence-transformers and LLM2Vec do).

The whitespace between an instruction and its text ("Query: " + "how ...") is placed where the
tokenizer itself would put it when tokenizing the joined string: byte-level BPEs (Llama-3, Qwen,
SmolLM) fold it into the text's first token ("Ġhow"), SentencePiece models add it themselves. A
one-time probe picks the right split, so the ids match natural tokenization and the boundary stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class TokenizedBatch:
    """Padded model inputs plus the mask of tokens to pool; all tensors are (batch, length)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pool_mask: torch.Tensor
    position_ids: torch.Tensor

    def to(self, device: torch.device | str) -> TokenizedBatch:
        return TokenizedBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """What the transformer takes. Explicit positions make padding side irrelevant; no KV cache
        is built, since an encoder never generates (it would only cost memory and copies)."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
            "use_cache": False,
        }


@dataclass(frozen=True)
class Sequence:
    """One tokenized input: its ids and how many leading tokens are excluded from pooling."""

    ids: list[int]
    n_unpooled: int
    truncated: bool


def special_token_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single text (e.g. ``[bos]``, ``[]``)."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    raise ValueError("cannot locate the text inside the tokenizer's output with special tokens")


class SequenceBuilder:
    """Builds :class:`Sequence` objects and pads them into :class:`TokenizedBatch` objects."""

    def __init__(self, tokenizer, max_length: int, append_eos: bool = False) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        if append_eos and tokenizer.eos_token_id is None:
            raise ValueError("append_eos=True but the tokenizer has no eos token")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.append_eos = append_eos
        self.prefix, self.suffix = special_token_frame(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.boundary = self._probe_boundary()

    def _probe_boundary(self) -> str:
        """How the tokenizer handles the space at an instruction/text boundary (see module doc)."""
        joint = self.token_ids(["Query: hello world"])[0]
        head, spaced, bare = self.token_ids(["Query:", " hello world", "hello world"])
        if head + spaced == joint:
            return "space_joins_text"  # byte-level BPE: " hello" -> "Ġhello"
        if head + bare == joint:
            return "space_implicit"  # SentencePiece: "hello" already carries its leading "▁"
        return "verbatim"

    def _split(self, instruction: str, text: str) -> tuple[str, str]:
        """Instruction and text strings to tokenize separately, moving boundary whitespace as probed."""
        stripped = instruction.rstrip()
        if stripped == instruction or self.boundary == "verbatim":
            return instruction, text
        if self.boundary == "space_joins_text":
            return stripped, instruction[len(stripped) :] + text
        return stripped, text

    def split_instruction(self, instruction: str | None, text: str) -> tuple[str, str]:
        """The two strings ``build`` tokenizes separately for ``instruction`` + ``text``: the instruction,
        and the text, which may start with the instruction's trailing whitespace (moved as the tokenizer
        would place it; see the module doc). No instruction: ``("", text)``."""
        if not instruction:
            return "", text
        return self._split(instruction, text)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text without special tokens (one batched call to the fast tokenizer)."""
        if not texts:
            return []
        return list(self.tokenizer(list(texts), add_special_tokens=False)["input_ids"])

    def build(self, texts: list[str], instructions: list[str] | None = None) -> list[Sequence]:
        text_ids = self.token_ids(texts)
        if instructions is None:
            return [self._assemble([], ids, instructed=False) for ids in text_ids]
        pieces = [
            self._split(instr, text) if instr else (instr, text) for instr, text in zip(instructions, texts)
        ]
        moved = [i for i, (piece, text) in enumerate(zip(pieces, texts)) if piece[1] != text]
        for i, ids in zip(moved, self.token_ids([pieces[i][1] for i in moved])):
            text_ids[i] = ids  # texts that took over the instruction's trailing whitespace
        unique = sorted({piece[0] for piece in pieces})
        instruction_ids = dict(zip(unique, self.token_ids(unique)))
        return [
            self._assemble(instruction_ids[piece[0]], ids, instructed=bool(instr))
            for piece, instr, ids in zip(pieces, instructions, text_ids)
        ]

    def build_from_ids(
        self, token_ids: list[list[int]], instruction: str | None = None, *, vocab_size: int | None = None
    ) -> list[Sequence]:
        """Sequences for texts given as token ids *without* special tokens (as the OpenAI API takes them):
        the prefix/suffix specials and the instruction are added around them, and they are truncated,
        exactly as a text would be. Raises :class:`~decoder2vec.errors.InputError` naming ``input[i]``."""
        from decoder2vec.errors import InputError

        for i, ids in enumerate(token_ids):
            if not ids:
                raise InputError(f"input[{i}] is an empty list of token ids")
            if vocab_size is not None:
                bad = next((t for t in ids if not 0 <= t < vocab_size), None)
                if bad is not None:
                    raise InputError(f"input[{i}] holds token id {bad}, outside [0, {vocab_size})")
        instruction_ids: list[int] = []
        if instruction:
            # The text is already tokenized, so the instruction's trailing space cannot fold into its
            # first token; the instruction is tokenized as it would be split off a text.
            head, _ = self._split(instruction, "")
            instruction_ids = self.token_ids([head])[0]
        return [self._assemble(instruction_ids, list(ids), instructed=bool(instruction)) for ids in token_ids]

    def _assemble(self, instruction: list[int], text: list[int], *, instructed: bool) -> Sequence:
        tail = ([self.tokenizer.eos_token_id] if self.append_eos else []) + self.suffix
        budget = self.max_length - len(self.prefix) - len(instruction) - len(tail)
        if budget < 1:
            raise ValueError(
                f"the instruction takes {len(instruction)} tokens, leaving no room for the text within "
                f"max_length={self.max_length}; shorten the instruction or raise max_length"
            )
        truncated = len(text) > budget
        ids = self.prefix + instruction + text[:budget] + tail
        n_unpooled = len(self.prefix) + len(instruction) if instructed else 0
        return Sequence(ids, n_unpooled, truncated)

    def collate(self, sequences: list[Sequence], padding_side: str = "right") -> TokenizedBatch:
        """Pad to the longest sequence; ``padding_side`` only moves the padding, never the result."""
        lengths = np.array([len(s.ids) for s in sequences])
        width = int(lengths.max())
        input_ids = np.full((len(sequences), width), self.pad_id, dtype=np.int64)
        attention = np.zeros((len(sequences), width), dtype=np.int64)
        pooled = np.zeros((len(sequences), width), dtype=np.int64)
        for row, (seq, length) in enumerate(zip(sequences, lengths)):
            start = width - length if padding_side == "left" else 0
            input_ids[row, start : start + length] = seq.ids
            attention[row, start : start + length] = 1
            pooled[row, start + seq.n_unpooled : start + length] = 1
        attention_mask = torch.from_numpy(attention)
        positions = (attention_mask.cumsum(dim=1) - 1).clamp_min(0)
        return TokenizedBatch(
            torch.from_numpy(input_ids), attention_mask, torch.from_numpy(pooled), positions
        )


def tokenize_batch(
    tokenizer,
    texts: list[str],
    instruction: str | list[str] | None = None,
    max_length: int = 512,
    append_eos: bool = False,
    padding_side: str = "right",
) -> TokenizedBatch:
    """Tokenize ``texts`` (with an optional instruction, shared or one per text) into one padded batch."""
    builder = SequenceBuilder(tokenizer, max_length, append_eos)
    return builder.collate(
        builder.build(list(texts), expand_instruction(instruction, len(texts))), padding_side
    )


def expand_instruction(instruction: str | list[str] | None, n: int) -> list[str] | None:
    """Normalise ``instruction`` to one string per text (``None`` when no text has one)."""
    if instruction is None:
        return None
    if isinstance(instruction, str):
        return [instruction] * n if instruction else None
    instructions = list(instruction)
    if len(instructions) != n:
        raise ValueError(
            f"got {len(instructions)} instructions for {n} texts; pass one string or one per text"
        )
    for i, item in enumerate(instructions):
        if not isinstance(item, str):
            raise TypeError(f"instruction[{i}] is {type(item).__name__}, not str")
    return instructions
