"""The user-facing :class:`Encoder`: a decoder LLM used as a bidirectional text encoder."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from decoder2vec.backbone.bidirectional import backbone_of, is_bidirectional, set_bidirectional
from decoder2vec.backbone.loading import load_backbone, resolve_model_path
from decoder2vec.encoding.model import PooledModel, embed
from decoder2vec.encoding.pooling import check_pooling_mode
from decoder2vec.encoding.tokenization import SequenceBuilder, TokenizedBatch, expand_instruction
from decoder2vec.errors import InputError, OutputExistsError
from decoder2vec.export.sentence_transformers import write_sentence_transformers_files
from decoder2vec.io import check_unicode, replace_entries

ENCODER_CONFIG = "decoder2vec_config.json"
# On CPU, activations of a few thousand tokens stay in cache during the memory-bound element-wise
# ops (norms, RoPE, SiLU), which take ~40% of a forward; bigger batches only add cache misses.
CPU_BATCH_TOKENS = 1024
# max_length None: DEFAULT_MAX_LENGTH, capped at the model's context (see default_max_length)
DEFAULTS = {"pooling": "mean", "max_length": None, "append_eos": False, "bidirectional": True}
DEFAULT_MAX_LENGTH = 512


def model_context(config) -> int | None:
    """The longest sequence the model was built for (``max_position_embeddings``), if it says."""
    return getattr(config, "max_position_embeddings", None)


def default_max_length(config) -> int:
    """The token limit an encoder gets when none is set: 512, or the model's context if shorter."""
    return min(DEFAULT_MAX_LENGTH, model_context(config) or DEFAULT_MAX_LENGTH)


def check_texts(texts: list) -> None:
    """Reject what cannot be embedded, naming the offending index."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        if not text.strip():
            raise ValueError(f"texts[{i}] is empty or whitespace-only; there is nothing to embed")
        check_unicode(text, f"texts[{i}]")


def as_text_list(texts) -> tuple[list, bool]:
    """``(items, single)``. Unordered or keyed collections are refused: a set has no row order, and a
    dict would silently embed its keys."""
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, dict | set | frozenset) or not isinstance(texts, Iterable):
        raise TypeError(
            f"texts must be a string or an ordered sequence of strings (list, tuple, generator), "
            f"not {type(texts).__name__}"
        )
    return list(texts), False


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def plan_batches(
    sorted_lengths: np.ndarray, batch_size: int, max_tokens: int | None
) -> list[tuple[int, int]]:
    """Split length-sorted (longest first) sequences into ``[start, stop)`` batches.

    A batch holds at most ``batch_size`` texts and, when ``max_tokens`` is set, at most that many
    padded tokens (its first, longest sequence times its size); a single text always fits.
    """
    batches, start, n = [], 0, len(sorted_lengths)
    while start < n:
        size = batch_size
        if max_tokens is not None:
            size = max(1, min(size, max_tokens // int(sorted_lengths[start])))
        batches.append((start, min(start + size, n)))
        start += size
    return batches


class Encoder:
    """Embeds texts with a (by default bidirectional) decoder backbone and a pooling mode.

    Build it with :meth:`from_pretrained`; ``encode`` follows sentence-transformers' conventions.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        pooling: str = "mean",
        max_length: int | None = None,
        append_eos: bool = False,
        max_batch_tokens: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        # The one pooled module (backbone -> pooling) that encodes here and that training wraps.
        self.module = PooledModel(backbone_of(model), pooling)
        # Padded tokens per forward; None = automatic (CPU_BATCH_TOKENS on CPU, no cap on GPUs).
        self.max_batch_tokens = max_batch_tokens
        if max_length is None:  # the default, capped by what the model can attend to
            max_length = default_max_length(self.model.config)
        self._max_length, self._append_eos = max_length, append_eos
        self._rebuild(max_length, append_eos)

    # Settings are properties: changing one takes effect at once (the tokenizer plan is rebuilt) and is
    # exactly what save() writes, so a reloaded encoder embeds the same way.
    def _rebuild(self, max_length: int, append_eos: bool) -> None:
        max_length = check_positive_int("max_length", max_length)
        context = model_context(self.model.config)
        if context is not None and max_length > context:
            raise ValueError(f"max_length={max_length} exceeds the model's context of {context} tokens")
        self._builder = SequenceBuilder(self.tokenizer, max_length, bool(append_eos))
        self._max_length, self._append_eos = max_length, bool(append_eos)

    @property
    def model(self) -> torch.nn.Module:
        """The bare transformer backbone (e.g. ``LlamaModel``)."""
        return self.module.backbone

    @property
    def pooling(self) -> str:
        return self.module.pooling

    @pooling.setter
    def pooling(self, mode: str) -> None:
        self.module.pooling = check_pooling_mode(mode)

    @property
    def max_length(self) -> int:
        """Token limit per text (instruction and special tokens included); longer texts are truncated."""
        return self._max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        self._rebuild(value, self._append_eos)

    @property
    def append_eos(self) -> bool:
        return self._append_eos

    @append_eos.setter
    def append_eos(self, value: bool) -> None:
        self._rebuild(self._max_length, value)

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        adapters: list[str | Path] | None = None,
        pooling: str | None = None,
        bidirectional: bool | None = None,
        max_length: int | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        attn_implementation: str | None = None,
        append_eos: bool | None = None,
    ) -> Encoder:
        """Load from a folder, GGUF file, hub id or the alias ``smollm2-135m``.

        Settings left as ``None`` come from the folder's ``decoder2vec_config.json`` when it has one
        (so a saved encoder round-trips), else the defaults: mean pooling, bidirectional, 512 tokens.
        """
        path = resolve_model_path(name_or_path)
        saved = read_encoder_config(path)

        def pick(key: str, value):
            return value if value is not None else saved.get(key, DEFAULTS[key])

        model, tokenizer = load_backbone(
            path,
            bidirectional=pick("bidirectional", bidirectional),
            adapters=adapters,
            dtype=dtype,
            device=device,
            attn_implementation=attn_implementation,
        )
        return cls(
            model,
            tokenizer,
            pooling=pick("pooling", pooling),
            max_length=pick("max_length", max_length),
            append_eos=pick("append_eos", append_eos),
        )

    # ---------------------------------------------------------------- properties
    @property
    def bidirectional(self) -> bool:
        return is_bidirectional(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def __repr__(self) -> str:
        name = getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__
        mode = "bidirectional" if self.bidirectional else "causal"
        return f"Encoder({name!r}, {mode}, pooling={self.pooling!r}, max_length={self.max_length})"

    # ---------------------------------------------------------------- low level
    def tokenize(self, texts: list[str], instruction: str | list[str] | None = None) -> TokenizedBatch:
        """One padded batch for ``texts``; see :mod:`decoder2vec.encoding.tokenization`."""
        sequences = self._builder.build(list(texts), expand_instruction(instruction, len(texts)))
        return self._builder.collate(sequences, self.tokenizer.padding_side)

    def token_states(
        self, batch: TokenizedBatch, *, all_layers: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Last hidden states (B, L, D), or every layer's (embeddings first) with ``all_layers``."""
        with torch.inference_mode():
            out = self.model(**batch.to(self.device).model_inputs(), output_hidden_states=all_layers)
        return tuple(out.hidden_states) if all_layers else out.last_hidden_state

    def embed_batch(self, batch: TokenizedBatch) -> torch.Tensor:
        """Forward + pooling for one batch; autograd is left to the caller (``encode`` runs it under inference mode)."""
        return embed(self.module, batch, self.device)

    # ---------------------------------------------------------------- encode
    def encode(
        self,
        texts: str | Iterable[str],
        *,
        instruction: str | list[str] | None = None,
        batch_size: int = 32,
        normalize: bool = False,
        show_progress_bar: bool | None = None,
        convert_to: str = "numpy",
    ) -> np.ndarray | torch.Tensor:
        """Embed ``texts`` into float32 vectors, in input order.

        ``instruction`` (one string, or one per text) is attended to but not pooled. A single string
        gives a 1-D vector; an empty list gives a ``(0, dim)`` array. Texts longer than ``max_length``
        are truncated (one warning per call); empty or whitespace-only texts raise ``ValueError``.
        ``convert_to`` is ``"numpy"`` or ``"torch"``.
        """
        if convert_to not in ("numpy", "torch"):
            raise ValueError(f"convert_to must be 'numpy' or 'torch', got {convert_to!r}")
        check_positive_int("batch_size", batch_size)
        items, single = as_text_list(texts)
        check_texts(items)
        embeddings = torch.zeros(len(items), self.embedding_dim, dtype=torch.float32)
        if items:
            embeddings = self._encode_sorted(
                items, expand_instruction(instruction, len(items)), batch_size, show_progress_bar
            )
        if normalize:
            embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        if single:
            embeddings = embeddings[0]
        return embeddings.numpy() if convert_to == "numpy" else embeddings

    def _encode_sorted(
        self,
        texts: list[str],
        instructions: list[str] | None,
        batch_size: int,
        show_progress_bar: bool | None,
    ) -> torch.Tensor:
        # Tokenize everything once, up front, then batch by length (longest first) so each batch
        # carries little padding; results are scattered back into input order.
        sequences = self._builder.build(texts, instructions)
        truncated = sum(s.truncated for s in sequences)
        if truncated:
            warnings.warn(
                f"{truncated} of {len(texts)} texts were longer than max_length={self.max_length} tokens and were truncated",
                stacklevel=3,
            )
        lengths = np.array([len(s.ids) for s in sequences])
        order = np.argsort(-lengths, kind="stable")
        batches = plan_batches(lengths[order], batch_size, self._token_budget())
        out = torch.empty(len(texts), self.embedding_dim, dtype=torch.float32)
        if show_progress_bar is None:
            show_progress_bar = len(batches) > 1 and sys.stderr.isatty()
        with (
            torch.inference_mode(),
            tqdm(total=len(texts), desc="Encoding", unit="text", disable=not show_progress_bar) as bar,
        ):
            for start, stop in batches:
                index = order[start:stop]
                batch = self._builder.collate([sequences[i] for i in index], self.tokenizer.padding_side)
                out[torch.from_numpy(index)] = self.embed_batch(batch).float().cpu()
                bar.update(len(index))
        return out

    def _token_budget(self) -> int | None:
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        return CPU_BATCH_TOKENS if self.device.type == "cpu" else None

    def encode_queries(
        self, texts: str | Iterable[str], *, instruction: str | list[str] | None = None, **kwargs
    ) -> np.ndarray | torch.Tensor:
        """Embed queries; the task ``instruction`` goes on the query side only (as in LLM2Vec)."""
        return self.encode(texts, instruction=instruction, **kwargs)

    def encode_documents(self, texts: str | Iterable[str], **kwargs) -> np.ndarray | torch.Tensor:
        """Embed documents, which carry no instruction."""
        return self.encode(texts, instruction=None, **kwargs)

    def similarity(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Cosine similarity matrix between two sets of embeddings."""
        a = torch.nn.functional.normalize(
            torch.as_tensor(a, dtype=torch.float32).reshape(-1, self.embedding_dim), dim=-1
        )
        b = torch.nn.functional.normalize(
            torch.as_tensor(b, dtype=torch.float32).reshape(-1, self.embedding_dim), dim=-1
        )
        return a @ b.T

    # ---------------------------------------------------------------- saving
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write HF weights, tokenizer, our settings and the sentence-transformers files.

        Files are written beside ``path`` and then renamed into it one by one, so a reader never sees
        a half-written file. A folder holding anything but a saved encoder is refused; a previous
        encoder is replaced only with ``overwrite=True``, and then only the files this method writes
        (a README or reports/ folder the user added stays).
        """
        target = Path(path).expanduser()
        if target.exists() and not target.is_dir():
            raise OutputExistsError(f"{target} exists and is not a folder")
        if target.is_dir() and any(target.iterdir()):
            if not (target / ENCODER_CONFIG).is_file():
                raise OutputExistsError(
                    f"{target} is not empty and holds no saved encoder; save into a new or empty folder"
                )
            if not overwrite:
                raise OutputExistsError(
                    f"{target} already holds a saved encoder; pass overwrite=True to replace it"
                )
        return replace_entries(target, self._write, owned=_written_by_save)

    def _write(self, folder: Path) -> None:
        bidirectional = self.bidirectional
        # Write both flags explicitly (even when is_causal was only implied), so other engines read them too.
        set_bidirectional(self.model, bidirectional)
        self.model.save_pretrained(folder, safe_serialization=True)
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "right"  # what sentence-transformers will pad with
        try:
            self.tokenizer.save_pretrained(folder)
        finally:
            self.tokenizer.padding_side = side
        settings = {
            "pooling": self.pooling,
            "max_length": self.max_length,
            "append_eos": self.append_eos,
            "bidirectional": bidirectional,
        }
        (folder / ENCODER_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
        write_sentence_transformers_files(
            folder, pooling=self.pooling, max_length=self.max_length, embedding_dim=self.embedding_dim
        )


def _written_by_save(name: str) -> bool:
    """Files a previous ``save()`` may have left that a new one might not rewrite (e.g. weight shards)."""
    return name.startswith("model") and name.endswith((".safetensors", ".safetensors.index.json"))


def read_encoder_config(path: str | Path) -> dict:
    """The settings a saved encoder folder records (``decoder2vec_config.json``), or ``{}``."""
    file = Path(path) / ENCODER_CONFIG
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{file} is not valid JSON ({exc}); delete the folder and save or convert it again"
        ) from exc
