"""The user-facing :class:`Encoder`: a decoder LLM used as a bidirectional text encoder."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from decoder2vec.backbone.bidirectional import backbone_of, is_bidirectional
from decoder2vec.backbone.loading import (
    load_backbone,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
    save_backbone,
)
from decoder2vec.backbone.model_io import quiet_transformers
from decoder2vec.backbone.precision import check_inference_precision, describe_kernels, quantize_int8
from decoder2vec.encoder_config import (
    ENCODER_CONFIG,
    check_matryoshka_dimensions,
    check_pooling_mode,
    default_max_length,
    is_encoder_file,
    model_context,
    read_calibration,
    read_encoder_config,
    read_projection,
    write_encoder_files,
)
from decoder2vec.encoding.checks import as_text_list, check_positive_int, check_texts
from decoder2vec.encoding.compact import OutputSpec, finish
from decoder2vec.encoding.model import PooledModel, embed
from decoder2vec.encoding.static import StaticEncoder
from decoder2vec.encoding.tokenization import Sequence, SequenceBuilder, TokenizedBatch, expand_instruction
from decoder2vec.errors import ConfigError, OutputExistsError
from decoder2vec.io import replace_entries
from decoder2vec.spec import EncoderSpec
from decoder2vec.static_format import is_static_folder

__all__ = [
    "CPU_BATCH_TOKENS",
    "ENCODER_CONFIG",
    "MAX_ATTENTION_CELLS",
    "Encoder",
    "plan_batches",
    "read_encoder_config",
]

# On CPU, activations of a few thousand tokens stay in cache during the memory-bound element-wise
# ops (norms, RoPE, SiLU), which take ~40% of a forward; bigger batches only add cache misses.
CPU_BATCH_TOKENS = 1024
# Attention cells (padded length squared, times the batch) per forward, on any device: at most one
# 8,192-token sequence's worth, so raising max_length to a long context never stacks long sequences into
# one forward (a GPU has no token budget), while short texts still batch freely.
MAX_ATTENTION_CELLS = 8192 * 8192
# How many texts ``calibrate`` keeps by default: enough for stable per-dimension min/max (sentence-
# transformers warns under 100), small enough to ship (1000 x 576 float32 = 2.3 MB).
CALIBRATION_TEXTS = 1000


def plan_batches(
    sorted_lengths: np.ndarray, batch_size: int, max_tokens: int | None, max_attention: int | None = None
) -> list[tuple[int, int]]:
    """Split length-sorted (longest first) sequences into ``[start, stop)`` batches.

    A batch holds at most ``batch_size`` texts and, when ``max_tokens`` is set, at most that many
    padded tokens (its first, longest sequence times its size), and when ``max_attention`` is set, at
    most that many attention cells (size times the longest length squared); a single text always fits.
    """
    batches, start, n = [], 0, len(sorted_lengths)
    while start < n:
        size = batch_size
        longest = max(1, int(sorted_lengths[start]))
        if max_tokens is not None:
            size = max(1, min(size, max_tokens // longest))
        if max_attention is not None:
            size = max(1, min(size, max_attention // longest**2))
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
        matryoshka_dimensions: list[int] | None = None,
        calibration: np.ndarray | None = None,
        projection: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        # The one pooled module (backbone -> pooling -> projection) that encodes here and that training wraps.
        self.module = PooledModel(backbone_of(model), pooling)
        self.projection = projection
        # Padded tokens per forward; None = automatic (CPU_BATCH_TOKENS on CPU, no cap on GPUs).
        self.max_batch_tokens = max_batch_tokens
        if max_length is None:  # the default, capped by what the model can attend to
            max_length = default_max_length(self.model.config)
        self._max_length, self._append_eos = max_length, append_eos
        self._rebuild(max_length, append_eos)
        self.matryoshka_dimensions = matryoshka_dimensions
        self.calibration = calibration

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

    @property
    def builder(self) -> SequenceBuilder:
        """How texts (or token ids) become sequences: tokenization, instruction boundary, truncation."""
        return self._builder

    @property
    def matryoshka_dimensions(self) -> list[int] | None:
        """The nested dimensions the encoder was trained for (largest first), or None."""
        return self._matryoshka

    @matryoshka_dimensions.setter
    def matryoshka_dimensions(self, dims: list[int] | None) -> None:
        self._matryoshka = check_matryoshka_dimensions(dims, self.embedding_dim)

    @property
    def projection(self) -> np.ndarray | None:
        """The (out, in) matrix applied after pooling (saved as sentence-transformers' Dense), or None."""
        linear = self.module.projection
        return None if linear is None else linear.weight.detach().float().cpu().numpy()

    @projection.setter
    def projection(self, weight: np.ndarray | torch.Tensor | None) -> None:
        if weight is None:
            self.module.projection = None
            return
        weight = torch.as_tensor(weight, dtype=torch.float32)
        hidden = int(self.model.config.hidden_size)
        if weight.ndim != 2 or weight.shape[1] != hidden:
            raise ValueError(
                f"a projection must be an (out, {hidden}) matrix for this model's {hidden}-wide pooled "
                f"states, got shape {tuple(weight.shape)}"
            )
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=self.device)
        with torch.no_grad():
            linear.weight.copy_(weight)
        self.module.projection = linear

    def project(self, pooled: np.ndarray) -> np.ndarray:
        """Pooled rows (n, hidden) -> embeddings (n, embedding_dim): the projection, if any."""
        if self.module.projection is None:
            return pooled
        with torch.inference_mode():
            rows = torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32)).to(self.device)
            return self.module.project(rows).float().cpu().numpy()

    @property
    def calibration(self) -> np.ndarray | None:
        """Raw pooled embeddings of a text sample (n, width): the int8 ranges of every output are read
        from it; set by :meth:`calibrate`, saved with the encoder."""
        return self._calibration

    @calibration.setter
    def calibration(self, sample: np.ndarray | None) -> None:
        if sample is not None:
            sample = np.asarray(sample, dtype=np.float32)
            if sample.ndim != 2 or sample.shape[1] != self.embedding_dim or len(sample) < 2:
                raise ValueError(
                    f"a calibration sample must be (n >= 2, {self.embedding_dim}) float embeddings, "
                    f"got shape {sample.shape}"
                )
            bad = np.flatnonzero(~np.isfinite(sample).all(axis=1))
            if bad.size:  # its min/max would be NaN ranges: every int8 output zeros
                raise ValueError(f"the calibration sample's row {int(bad[0])} holds NaN or infinite values")
        self._calibration = sample

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
        quantization: str | None = None,
    ) -> Encoder | StaticEncoder:
        """Load from a folder, GGUF file, hub id or the alias ``smollm2-135m``.

        A model2vec folder (e.g. written by ``decoder2vec export static``) gives a
        :class:`~decoder2vec.encoding.static.StaticEncoder`, which keeps this class's ``encode`` contract.

        Settings left as ``None`` come from the folder's ``decoder2vec_config.json`` when it has one
        (so a saved encoder round-trips), else the defaults: mean pooling, bidirectional, 512 tokens.
        ``dtype=torch.bfloat16`` on a CPU needs native bf16 (AVX512-BF16 or AMX); ``quantization="int8"``
        (CPU only, float32) quantizes the backbone's linear layers after loading (see
        :mod:`decoder2vec.backbone.precision`). Both are refused, before loading, where they cannot run fast.
        """
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        check_inference_precision(torch_dtype, quantization, torch_device)
        path = resolve_model_path(name_or_path)
        if is_static_folder(path):  # a model2vec folder: the same encode contract, without a transformer
            return StaticEncoder.from_pretrained(
                path,
                adapters=adapters,
                pooling=pooling,
                bidirectional=bidirectional,
                max_length=max_length,
                append_eos=append_eos,
            )
        # every setting, width and module checked on the files, before the weights load
        spec = EncoderSpec.read(
            path, pooling=pooling, bidirectional=bidirectional, max_length=max_length, append_eos=append_eos
        )
        settings = spec.settings()
        calibration = read_calibration(spec.folder)  # before the weights: damaged files fail fast
        projection = read_projection(spec.folder)
        model, tokenizer = load_backbone(
            path,
            bidirectional=settings["bidirectional"],
            adapters=adapters,
            dtype=torch_dtype,
            device=torch_device,
            attn_implementation=attn_implementation,
        )
        if quantization == "int8":
            model = quantize_int8(model)
        encoder = cls(
            model,
            tokenizer,
            pooling=settings["pooling"],
            max_length=settings["max_length"],
            append_eos=settings["append_eos"],
            matryoshka_dimensions=settings["matryoshka_dimensions"],
            calibration=calibration,
            projection=projection,
        )
        encoder.quantization = quantization
        return encoder

    # ---------------------------------------------------------------- properties
    quantization: str | None = None  # "int8" when from_pretrained quantized the backbone

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the backbone's float weights (int8-quantized layers keep float32 around them)."""
        return self.model.get_input_embeddings().weight.dtype

    @property
    def kernels(self) -> str:
        """What the matmuls run on: dtype or int8, and the CPU instructions (``decoder2vec info`` shows it)."""
        return describe_kernels(self.dtype, self.quantization, self.device)

    @property
    def bidirectional(self) -> bool:
        return is_bidirectional(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embedding_dim(self) -> int:
        """The width of the output vectors: the projection's, else the model's hidden size."""
        linear = self.module.projection
        return int(linear.out_features) if linear is not None else int(self.model.config.hidden_size)

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

    # ---------------------------------------------------------------- the embedding core
    # Every path from sequences to vectors goes through these two methods: ``encode`` and ``embed-corpus``
    # through embed_sequences, the server (which plans its own batches across requests) through
    # forward_sequences and then compact.finish, the same output step.
    def forward_sequences(self, sequences: list[Sequence]) -> torch.Tensor:
        """One forward: collate -> backbone -> pool; pooled float32 rows on the CPU, in the given order."""
        batch = self._builder.collate(sequences, self.tokenizer.padding_side)
        with torch.inference_mode():
            return self.embed_batch(batch).float().cpu()

    def embed_sequences(
        self,
        sequences: list[Sequence],
        *,
        batch_size: int = 32,
        output: OutputSpec | None = None,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Built sequences -> output rows in input order: length-sorted batches under the token budget,
        :meth:`forward_sequences` each, then ``output``'s truncation, normalization and quantization."""
        output = output or OutputSpec()
        pooled = np.zeros((len(sequences), self.embedding_dim), dtype=np.float32)
        batches = self.sorted_batches(sequences, batch_size)
        if show_progress_bar is None:
            show_progress_bar = len(batches) > 1 and sys.stderr.isatty()
        with tqdm(total=len(sequences), desc="Encoding", unit="text", disable=not show_progress_bar) as bar:
            for index in batches:
                pooled[index] = self.forward_sequences([sequences[i] for i in index]).numpy()
                bar.update(len(index))
        return finish(pooled, output)

    def output_spec(
        self,
        *,
        dimensions: int | None = None,
        normalize: bool = False,
        precision: str = "float32",
        ranges: np.ndarray | None = None,
    ) -> OutputSpec:
        """Check the output options and fill in int8 ranges from the calibration sample (see ``encode``)."""
        return OutputSpec.resolve(
            self.embedding_dim,
            self.calibration,
            dimensions=dimensions,
            normalize=normalize,
            precision=precision,
            ranges=ranges,
        )

    def calibrate(
        self, texts: Iterable[str], *, instruction: str | list[str] | None = None, batch_size: int = 32
    ) -> None:
        """Keep the raw pooled embeddings of ``texts`` (a sample like the data to embed; a few hundred to
        a thousand) as the calibration sample: int8/uint8 ranges for any ``dimensions`` and ``normalize``
        are read from it, and ``save`` stores it."""
        sample = self.encode(list(texts), instruction=instruction, batch_size=batch_size)
        if sample.ndim != 2 or len(sample) < 2:
            raise ValueError("calibrate needs at least 2 texts")
        self.calibration = sample

    # ---------------------------------------------------------------- encode
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
        """Embed ``texts``, in input order.

        ``instruction`` (one string, or one per text) is attended to but not pooled. A single string
        gives a 1-D vector; an empty list gives a ``(0, width)`` array. Texts longer than ``max_length``
        are truncated (one warning per call); empty or whitespace-only texts raise ``ValueError``.

        As in sentence-transformers: ``dimensions`` keeps the first N values (``truncate_dim``; meant for
        the encoder's ``matryoshka_dimensions``), then ``normalize`` makes them unit length, then
        ``precision`` quantizes: ``float32``, ``int8``/``uint8`` (per-dimension ranges from ``ranges``, a
        (2, N) min/max array, or else from the sample of :meth:`calibrate`), ``binary``/``ubinary`` (sign
        bits packed 8 to a byte). ``convert_to`` is ``"numpy"`` or ``"torch"``.
        """
        if convert_to not in ("numpy", "torch"):
            raise ValueError(f"convert_to must be 'numpy' or 'torch', got {convert_to!r}")
        check_positive_int("batch_size", batch_size)
        output = self.output_spec(
            dimensions=dimensions, normalize=normalize, precision=precision, ranges=ranges
        )
        items, single = as_text_list(texts)
        check_texts(items)
        # Tokenize everything once, up front; the core batches by length and returns input order.
        sequences = self._builder.build(items, expand_instruction(instruction, len(items)))
        truncated = sum(s.truncated for s in sequences)
        if truncated:
            warnings.warn(
                f"{truncated} of {len(items)} texts were longer than max_length={self.max_length} tokens and were truncated",
                stacklevel=2,
            )
        embeddings = self.embed_sequences(
            sequences, batch_size=batch_size, output=output, show_progress_bar=show_progress_bar
        )
        if single:
            embeddings = embeddings[0]
        return embeddings if convert_to == "numpy" else torch.from_numpy(embeddings)

    def _token_budget(self) -> int | None:
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        return CPU_BATCH_TOKENS if self.device.type == "cpu" else None

    def sorted_batches(self, sequences: list[Sequence], batch_size: int) -> list[np.ndarray]:
        """The positions in ``sequences`` of each forward: longest first (little padding per batch), cut by
        :meth:`batch_plan`."""
        lengths = np.array([len(s.ids) for s in sequences])
        order = np.argsort(-lengths, kind="stable")
        return [order[start:stop] for start, stop in self.batch_plan(lengths[order], batch_size)]

    def batch_plan(self, sorted_lengths: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
        """``[start, stop)`` batches of length-sorted (longest first) sequences, under this encoder's
        padded-token budget and the attention bound (``MAX_ATTENTION_CELLS``); see :func:`plan_batches`."""
        return plan_batches(sorted_lengths, batch_size, self._token_budget(), MAX_ATTENTION_CELLS)

    def encode_chunks(
        self,
        documents: str | Iterable[str],
        *,
        chunking: str = "sentences",
        chunk_size: int = 256,
        overlap: int = 0,
        late: bool = True,
        instruction: str | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        normalize: bool = False,
        dimensions: int | None = None,
        precision: str = "float32",
        ranges: np.ndarray | None = None,
        show_progress_bar: bool | None = None,
    ):
        """Split each document into chunks and embed every chunk; ``late=True`` (late chunking) pools each
        chunk's tokens from one forward over the whole document, ``late=False`` embeds each chunk's text
        alone. Returns, per document, a list of :class:`~decoder2vec.encoding.chunking.Chunk` (``text``,
        character ``start``/``end``, ``embedding``); a single string gives its one list. ``max_length``
        bounds one late forward (default: the model's context; longer documents are covered by
        overlapping windows). See :mod:`decoder2vec.encoding.chunking` for the splitting rules."""
        from decoder2vec.encoding.chunking import encode_chunks

        return encode_chunks(
            self,
            documents,
            chunking=chunking,
            chunk_size=chunk_size,
            overlap=overlap,
            late=late,
            instruction=instruction,
            max_length=max_length,
            batch_size=batch_size,
            output=self.output_spec(
                dimensions=dimensions, normalize=normalize, precision=precision, ranges=ranges
            ),
            show_progress_bar=show_progress_bar,
        )

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
        a, b = (torch.as_tensor(x, dtype=torch.float32) for x in (a, b))
        a = torch.nn.functional.normalize(a.reshape(-1, a.shape[-1]), dim=-1)
        b = torch.nn.functional.normalize(b.reshape(-1, b.shape[-1]), dim=-1)
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
        self._check_savable()
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
        return replace_entries(target, self.write_files, owned=is_encoder_file)

    def _check_savable(self) -> None:
        if self.quantization is not None:
            raise ConfigError(
                f"this encoder was loaded with quantization={self.quantization!r}, which is applied at load "
                "time and not saved; save the float encoder and load it with quantization= instead"
            )

    def write_files(self, folder: Path) -> None:
        """Write the encoder's files into ``folder`` as they are (no checks, not atomic): what ``save`` runs in
        its temporary folder, and what callers that publish a folder of their own (``convert``) use."""
        self._check_savable()
        save_backbone(self.model, self.tokenizer, folder)
        settings = {
            "pooling": self.pooling,
            "max_length": self.max_length,
            "append_eos": self.append_eos,
            "bidirectional": self.bidirectional,
            "matryoshka_dimensions": self.matryoshka_dimensions,
        }
        write_encoder_files(folder, settings, self.embedding_dim, self.calibration, self.projection)


def load_encoder(
    model: str,
    pooling: str | None = None,
    causal: bool = False,
    max_length: int | None = None,
    dtype: str | None = None,
    quantization: str | None = None,
) -> Encoder | StaticEncoder:
    """Load an :class:`Encoder` (or a static model) for a command or a server worker, quietly."""
    quiet_transformers()
    return Encoder.from_pretrained(
        model,
        pooling=pooling,
        bidirectional=False if causal else None,
        max_length=max_length,
        dtype=dtype,
        quantization=quantization,
    )
