"""A static token-embedding model (model2vec's format) behind the :class:`~decoder2vec.Encoder` contract.

A text's embedding is the mean of its tokens' rows, tokenized without special tokens -- exactly what
``model2vec.StaticModel.encode`` and sentence-transformers' ``StaticEmbedding`` compute -- then the same
output step as every encoder (``compact.finish``: ``dimensions``, ``normalize``, ``precision``).
``Encoder.from_pretrained`` returns a :class:`StaticEncoder` for any model2vec folder (``config.json`` with
``model_type: model2vec``), such as the ones ``decoder2vec export static`` writes.

What a static model cannot do is refused with a clear error: other instructions than the one it was
distilled with (there is no attention to condition on them), adapters, pooling or attention settings,
late chunking, GGUF export and training (none of them has a transformer to act on).
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from decoder2vec.encoder_config import read_calibration
from decoder2vec.encoding.checks import as_text_list, check_positive_int, check_texts
from decoder2vec.encoding.compact import OutputSpec, finish
from decoder2vec.encoding.tokenization import Sequence, SequenceBuilder
from decoder2vec.errors import InputError, ModelLoadError
from decoder2vec.static_format import (
    STATIC_MAX_LENGTH,
    STATIC_META,
    TOKENIZER,
    WEIGHTS,
    vocab_tokenizer,
)

# Texts per numpy gather: enough to amortise Python overhead, small enough that the (tokens, width) gather
# stays a few MB.
CHUNK_TEXTS = 1024


class StaticEncoder:
    """The :class:`~decoder2vec.Encoder` contract (``encode`` and its options, ``similarity``, ``calibrate``,
    ``embedding_dim``) for a static model; build it with ``Encoder.from_pretrained(folder)``."""

    pooling = "mean"  # of the static token vectors
    bidirectional = False
    append_eos = False
    matryoshka_dimensions = None
    device = torch.device("cpu")
    # Tokens per server batch: a "forward" is a gather and a mean, so batches can be large (16k x 256 floats
    # = 16 MB), and the batcher's per-forward overhead is amortised over many requests.
    max_batch_tokens = 16384

    def __init__(
        self,
        embeddings: np.ndarray,
        tokenizer,
        *,
        instruction: str | None = None,
        max_length: int = STATIC_MAX_LENGTH,
        calibration: np.ndarray | None = None,
        name: str = "",
    ) -> None:
        self.embeddings = np.asarray(embeddings)
        if self.embeddings.ndim != 2:
            raise ValueError(f"static embeddings must be a 2-D matrix, got shape {self.embeddings.shape}")
        self.tokenizer = vocab_tokenizer(tokenizer)
        self.instruction = instruction
        self.max_length = max_length
        self.calibration = calibration
        self.name = name
        unk = getattr(self.tokenizer.model, "unk_token", None)
        self._builder = None
        self._unk_id = self.tokenizer.token_to_id(unk) if unk else None

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        adapters=None,
        pooling: str | None = None,
        bidirectional: bool | None = None,
        max_length: int | None = None,
        append_eos: bool | None = None,
        **_ignored,
    ) -> StaticEncoder:
        """Load a model2vec folder. Settings of a transformer (adapters, pooling, attention, EOS) do not apply
        and are refused; ``dtype``, ``device`` and ``attn_implementation`` are ignored (numpy on the CPU)."""
        from safetensors import safe_open
        from tokenizers import Tokenizer

        path = Path(path)
        given = {
            "adapters": adapters,
            "pooling": None if pooling == cls.pooling else pooling,
            "append_eos": append_eos,
        }
        wrong = [f"{k}={v!r}" for k, v in given.items() if v]
        if bidirectional:
            wrong.append("bidirectional=True")
        if wrong:
            raise ModelLoadError(
                f"{path} is a static model (mean of token vectors, no transformer): {', '.join(wrong)} "
                "does not apply to it"
            )
        for name in (WEIGHTS, TOKENIZER):
            if not (path / name).is_file():
                raise ModelLoadError(f"{path} is a model2vec folder without {name}")
        with safe_open(str(path / WEIGHTS), framework="numpy") as weights:
            keys = set(weights.keys())
            if "embeddings" not in keys:
                raise ModelLoadError(f"{path / WEIGHTS} holds no 'embeddings' tensor (found {sorted(keys)})")
            if keys & {"mapping", "weights"}:
                raise ModelLoadError(
                    f"{path / WEIGHTS} is a vocabulary-quantized model2vec model, which decoder2vec does not load"
                )
            embeddings = weights.get_tensor("embeddings")
        tokenizer = Tokenizer.from_file(str(path / TOKENIZER))
        if len(embeddings) != tokenizer.get_vocab_size(with_added_tokens=True):
            raise ModelLoadError(
                f"{path}: {len(embeddings)} embedding rows for a tokenizer of "
                f"{tokenizer.get_vocab_size(with_added_tokens=True)} tokens"
            )
        meta = {}
        if (path / STATIC_META).is_file():
            meta = json.loads((path / STATIC_META).read_text())
        if max_length is not None and (isinstance(max_length, bool) or max_length < 1):
            raise ValueError(f"max_length must be positive, got {max_length}")
        return cls(
            embeddings,
            tokenizer,
            instruction=meta.get("instruction"),
            max_length=max_length or STATIC_MAX_LENGTH,
            calibration=read_calibration(path),
            name=str(path),
        )

    # ---------------------------------------------------------------- properties
    @property
    def embedding_dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __repr__(self) -> str:
        return f"StaticEncoder({self.name!r}, {len(self.embeddings)} tokens x {self.embedding_dim})"

    # ---------------------------------------------------------------- the embedding core
    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids as model2vec and StaticEmbedding take them: no special tokens, the unknown token dropped,
        at most ``max_length`` tokens."""
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return self._truncate(self.known([e.ids for e in encodings]))

    def known(self, ids: list[list[int]]) -> list[list[int]]:
        """model2vec drops the unknown token (word-level vocabularies map every unseen word to it)."""
        if self._unk_id is None:
            return [list(row) for row in ids]
        return [[t for t in row if t != self._unk_id] for row in ids]

    def _truncate(self, ids: list[list[int]]) -> list[list[int]]:
        return [row[: self.max_length] for row in ids]

    def mean_rows(self, ids: list[list[int]]) -> np.ndarray:
        """(n, width) float32: the mean of each id list's rows (zeros for an empty list)."""
        out = np.zeros((len(ids), self.embedding_dim), dtype=np.float32)
        lengths = np.array([len(row) for row in ids])
        filled = np.flatnonzero(lengths)
        if len(filled):
            flat = np.fromiter((t for i in filled for t in ids[i]), dtype=np.int64, count=int(lengths.sum()))
            starts = np.concatenate([[0], np.cumsum(lengths[filled])[:-1]])
            sums = np.add.reduceat(self.embeddings[flat].astype(np.float32), starts, axis=0)
            out[filled] = sums / lengths[filled, None]
        return out

    # ---------------------------------------------------------------- the server's path
    @property
    def vocab_size(self) -> int:
        return len(self.embeddings)

    @property
    def builder(self):
        """Sequences as the server builds them (its batcher, truncation flag and token-id inputs work
        unchanged): the static tokenization, an instruction only if it is the one baked in, and dropped."""
        if self._builder is None:
            from transformers import PreTrainedTokenizerFast

            hf = PreTrainedTokenizerFast(tokenizer_object=copy.deepcopy(self.tokenizer))
            self._builder = StaticSequenceBuilder(hf, self.max_length, encoder=self)
        return self._builder

    def forward_sequences(self, sequences) -> torch.Tensor:
        """The mean rows of built sequences' pooled ids, float32 (what the server's batcher calls)."""
        ids = self.known([s.ids[s.n_unpooled :] for s in sequences])
        return torch.from_numpy(self.mean_rows(ids))

    def check_instruction(self, instruction) -> None:
        """Only the instruction the model was distilled with (or none) can be honoured: it is baked into every
        token vector, and there is no attention to condition on another one."""
        wanted = {instruction} if isinstance(instruction, str) or instruction is None else set(instruction)
        wrong = sorted(i for i in wanted if i and i != self.instruction)
        if wrong:
            made = (
                f"for the instruction {self.instruction!r}" if self.instruction else "without an instruction"
            )
            raise InputError(
                f"instruction {wrong[0]!r}: this static model was distilled {made} and cannot follow another "
                "(export one per instruction with `decoder2vec export static --instruction`)",
                param="instruction",
            )

    def output_spec(
        self,
        *,
        dimensions: int | None = None,
        normalize: bool = False,
        precision: str = "float32",
        ranges: np.ndarray | None = None,
    ) -> OutputSpec:
        return OutputSpec.resolve(
            self.embedding_dim,
            self.calibration,
            dimensions=dimensions,
            normalize=normalize,
            precision=precision,
            ranges=ranges,
        )

    def encode(
        self,
        texts: str | Iterable[str],
        *,
        instruction: str | list[str] | None = None,
        batch_size: int = 32,
        normalize: bool = False,
        dimensions: int | None = None,
        precision: str = "float32",
        ranges: np.ndarray | None = None,
        show_progress_bar: bool | None = None,
        convert_to: str = "numpy",
    ) -> np.ndarray | torch.Tensor:
        """As :meth:`decoder2vec.Encoder.encode`: input order, a single string gives a 1-D vector, an empty list
        a ``(0, width)`` array, empty texts raise ``ValueError``; ``dimensions`` -> ``normalize`` ->
        ``precision``. ``batch_size`` is accepted for compatibility (a static model has no forward)."""
        if convert_to not in ("numpy", "torch"):
            raise ValueError(f"convert_to must be 'numpy' or 'torch', got {convert_to!r}")
        check_positive_int("batch_size", batch_size)
        output = self.output_spec(
            dimensions=dimensions, normalize=normalize, precision=precision, ranges=ranges
        )
        items, single = as_text_list(texts)
        check_texts(items)
        if (
            instruction is not None
            and not isinstance(instruction, str)
            and len(list(instruction)) != len(items)
        ):
            raise ValueError(f"got {len(list(instruction))} instructions for {len(items)} texts")
        self.check_instruction(instruction)
        pooled = np.zeros((len(items), self.embedding_dim), dtype=np.float32)
        if show_progress_bar is None:
            show_progress_bar = len(items) > CHUNK_TEXTS and sys.stderr.isatty()
        with tqdm(total=len(items), desc="Encoding", unit="text", disable=not show_progress_bar) as bar:
            for start in range(0, len(items), CHUNK_TEXTS):
                chunk = items[start : start + CHUNK_TEXTS]
                pooled[start : start + len(chunk)] = self.mean_rows(self.token_ids(chunk))
                bar.update(len(chunk))
        embeddings = finish(pooled, output)
        if single:
            embeddings = embeddings[0]
        return embeddings if convert_to == "numpy" else torch.from_numpy(embeddings)

    def encode_queries(self, texts, *, instruction=None, **kwargs):
        return self.encode(texts, instruction=instruction, **kwargs)

    def encode_documents(self, texts, **kwargs):
        return self.encode(texts, instruction=None, **kwargs)

    def calibrate(self, texts: Iterable[str], *, instruction=None, batch_size: int = 32) -> None:
        sample = self.encode(list(texts), instruction=instruction)
        if sample.ndim != 2 or len(sample) < 2:
            raise ValueError("calibrate needs at least 2 texts")
        self.calibration = sample

    def similarity(self, a, b) -> torch.Tensor:
        a, b = (torch.as_tensor(x, dtype=torch.float32) for x in (a, b))
        a = torch.nn.functional.normalize(a.reshape(-1, a.shape[-1]), dim=-1)
        b = torch.nn.functional.normalize(b.reshape(-1, b.shape[-1]), dim=-1)
        return a @ b.T

    def encode_chunks(self, *args, **kwargs):
        raise InputError(
            "a static model has no token states to pool per chunk: late chunking needs a transformer encoder "
            "(split the documents and encode the pieces instead)"
        )


class StaticSequenceBuilder(SequenceBuilder):
    """A :class:`SequenceBuilder` over the static tokenizer (no special tokens are added to a text) that refuses
    an instruction other than the one baked into the vectors, and leaves the baked one out of the ids."""

    def __init__(self, tokenizer, max_length: int, *, encoder: StaticEncoder) -> None:
        super().__init__(tokenizer, max_length)
        self.prefix, self.suffix = [], []  # model2vec and StaticEmbedding add no special tokens
        self._encoder = encoder

    def _baked(self, instruction) -> None:
        try:
            self._encoder.check_instruction(instruction)
        except InputError as exc:
            raise ValueError(str(exc)) from None  # the server answers it as a bad ``instruction``

    def build(self, texts: list[str], instructions: list[str] | None = None) -> list[Sequence]:
        self._baked(instructions)
        return super().build(texts, None)

    def build_from_ids(self, token_ids, instruction=None, *, vocab_size=None) -> list[Sequence]:
        self._baked(instruction)
        return super().build_from_ids(token_ids, None, vocab_size=vocab_size)
