"""Write an :class:`~decoder2vec.Encoder` as a GGUF file that llama.cpp runs as an embedding model.

llama.cpp reads ``{arch}.attention.causal`` and ``{arch}.pooling_type`` from the file's metadata, so an
encoder exported here runs bidirectionally, with its pooling, in ``llama-server --embeddings`` (and
Ollama, LM Studio) without extra flags. Everything is checked before a byte is written: an unsupported
architecture, pooling mode or tokenizer is a :class:`~decoder2vec.errors.ModelLoadError` naming it,
and the file appears only once complete (written to a temporary sibling, then ``os.replace``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from decoder2vec.encoder_config import GGUF_POOLING_TYPES
from decoder2vec.errors import ConfigError, ModelLoadError
from decoder2vec.export.gguf_tokenizer import TokenizerSpec, tokenizer_spec
from decoder2vec.io import file_mode, fsync_file

log = logging.getLogger(__name__)

OUTTYPES = ("f32", "f16", "q8_0")
# Families llama.cpp runs with the same math as transformers (a block may hold biases or q/k norms).
# ``permute_qk``: HF Llama/Mistral rotate halves of each head (pairs i, i + d/2); llama.cpp's "llama"
# arch uses NORM RoPE on adjacent pairs (2i, 2i + 1), so q/k rows are reordered per head. Qwen2/3
# run NEOX RoPE in llama.cpp, which is the rotate-half layout already: no reordering.
ARCHITECTURES = {
    "llama": ("llama", True),
    "mistral": ("llama", True),  # llama.cpp has no plain "mistral" arch: Mistral-style models run as llama
    "qwen2": ("qwen2", False),
    "qwen3": ("qwen3", False),
}
NOT_YET = {
    "gemma": "Gemma stores RMSNorm weights as (w - 1) and uses a SentencePiece tokenizer, neither handled yet",
    "gemma2": "Gemma 2 needs logit soft-capping, sandwich norms and a SentencePiece tokenizer, not handled yet",
    "gemma3_text": "Gemma 3 needs sliding-window layer patterns, sandwich norms and a SentencePiece tokenizer",
}
POOLING_TYPES = GGUF_POOLING_TYPES
# ggml's Q8_0 packs rows in blocks of 32 values (one fp16 scale + 32 int8 each).
Q8_0_BLOCK = 32


@dataclass(frozen=True)
class ExportPlan:
    """Everything the file will hold, decided (and validated) before anything is written."""

    arch: str
    permute_qk: bool
    outtype: str
    pooling: str
    causal: bool
    context_length: int
    tokenizer: TokenizerSpec
    tensor_names: dict[str, str]  # HF state-dict key -> GGUF tensor name


@dataclass(frozen=True)
class ExportResult:
    """What was written, for the command's one-line report."""

    path: Path
    arch: str
    outtype: str
    pooling: str
    causal: bool
    n_tensors: int
    n_bytes: int


def check_settings(outtype: str, pooling: str | None) -> None:
    """Reject an output type or pooling mode llama.cpp has no equivalent for."""
    if outtype not in OUTTYPES:
        raise ConfigError(f"unknown --outtype {outtype!r}; choose one of {', '.join(OUTTYPES)}")
    if pooling == "weighted_mean":
        raise ConfigError(
            "pooling 'weighted_mean' has no llama.cpp equivalent (it offers mean, cls, last); "
            "export with --pooling mean, last_token or bos"
        )
    if pooling is not None and pooling not in POOLING_TYPES:
        raise ConfigError(f"unknown pooling {pooling!r}; llama.cpp supports {', '.join(POOLING_TYPES)}")


def check_out_path(out: str | Path) -> Path:
    """The output file, which must be named ``*.gguf`` and must not be a directory."""
    out = Path(out).expanduser()
    if out.suffix.lower() != ".gguf":
        raise ConfigError(f"--out must end in .gguf, got {out}")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name ending in .gguf")
    return out


PROJECTION_UNSUPPORTED = (
    "this encoder has an output projection after pooling (2_Dense/, e.g. a distilled student's map into its "
    "teacher's space); llama.cpp's {arch} models end at pooling, so the GGUF would embed differently. Use "
    "the encoder folder (encode, serve, sentence-transformers) instead"
)


def plan_export(encoder, outtype: str = "f16", pooling: str | None = None) -> ExportPlan:
    """Check that ``encoder`` can be written as a llama.cpp model and decide how; raises before writing."""
    import gguf

    pooling = pooling or encoder.pooling
    check_settings(outtype, pooling)
    config = encoder.model.config
    model_type = check_architecture(config)
    if encoder.projection is not None:
        raise ConfigError(PROJECTION_UNSUPPORTED.format(arch=model_type))
    arch, permute_qk = ARCHITECTURES[model_type]
    # Mistral v0.1 attends within a sliding window, which llama.cpp's llama arch does not apply;
    # declaring the window as the context length keeps every accepted input exact.
    context_length = int(config.max_position_embeddings)
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True):  # Qwen2/3 carry a window they do not use
        context_length = min(context_length, int(window))
    spec = tokenizer_spec(encoder.tokenizer, vocab_size=int(config.vocab_size), append_eos=encoder.append_eos)
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], int(config.num_hidden_layers))
    names = {}
    for key in encoder.model.state_dict():
        gguf_name = name_map.get_name(key, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ModelLoadError(
                f"tensor {key!r} of this '{model_type}' model has no llama.cpp '{arch}' equivalent"
            )
        names[key] = gguf_name
    return ExportPlan(
        arch, permute_qk, outtype, pooling, not encoder.bidirectional, context_length, spec, names
    )


def check_architecture(config) -> str:
    """The config's ``model_type`` if llama.cpp can run it as exported, else a :class:`ModelLoadError`."""
    model_type = getattr(config, "model_type", None)
    if model_type in NOT_YET:
        raise ModelLoadError(
            f"exporting architecture '{model_type}' to GGUF is not supported yet: {NOT_YET[model_type]}"
        )
    if model_type not in ARCHITECTURES:
        raise ModelLoadError(
            f"exporting architecture '{model_type}' to GGUF is not supported "
            f"(supported: {', '.join(ARCHITECTURES)})"
        )
    _check_rope(config, model_type)
    return model_type


def check_before_loading(model: str, outtype: str, pooling: str | None) -> None:
    """What the encoder's spec alone decides (architecture, RoPE, saved pooling, a projection), so an export
    that cannot succeed fails before the weights load (minutes and tens of GB for a 7B model). The flags
    themselves are :func:`check_settings`'s, checked before this resolves the model."""
    from decoder2vec.spec import EncoderSpec, NotLocalError

    try:
        spec = EncoderSpec.read(model)
    except NotLocalError:
        return  # a hub id not fetched yet: plan_export checks its config after the load
    model_type = check_architecture(spec.backbone_config())
    check_settings(outtype, pooling or spec.pooling)
    if spec.projection:
        raise ConfigError(PROJECTION_UNSUPPORTED.format(arch=model_type))


def _check_rope(config, model_type: str) -> None:
    # transformers 5 keeps RoPE settings in rope_parameters; older configs in rope_scaling.
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = (
        params.get("rope_type", params.get("type", "default")) if isinstance(params, dict) else "default"
    )
    if rope_type not in ("default", None):
        raise ModelLoadError(f"'{model_type}' with RoPE scaling '{rope_type}' cannot be exported to GGUF yet")


def rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(getattr(config, "rope_theta", 10000.0))


def head_dim(config) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def interleave_rope_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k projection rows from HF's rotate-half RoPE layout to llama.cpp's interleaved one.

    Within each head, HF rotates row ``i`` with row ``i + d/2``; llama.cpp's NORM RoPE rotates rows
    ``2i`` and ``2i + 1``. So each head's rows ``[a_0..a_{d/2-1}, b_0..b_{d/2-1}]`` become
    ``[a_0, b_0, a_1, b_1, ...]``: view as (heads, 2, d/2, cols), swap the middle axes.
    """
    rows = weight.shape[0]
    half = rows // n_heads // 2
    return weight.reshape(n_heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def tensor_type(shape: tuple[int, ...], outtype: str):
    """The ggml type one tensor is stored as: 1-D tensors (norms, biases) stay f32, as llama.cpp expects;
    q8_0 matrices whose rows do not split into 32-value blocks fall back to f16."""
    import gguf

    if len(shape) == 1 or outtype == "f32":
        return gguf.GGMLQuantizationType.F32
    if outtype == "q8_0" and shape[-1] % Q8_0_BLOCK == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16


def convert_tensor(data: np.ndarray, qtype) -> np.ndarray:
    """``data`` (float32) encoded as ``qtype``: the bytes that go into the file."""
    import gguf

    if qtype == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype)


def _tensors(encoder, plan: ExportPlan) -> Iterator[tuple[str, np.ndarray]]:
    """``(state-dict key, float32 array in llama.cpp's layout)`` for each tensor, one at a time."""
    config = encoder.model.config
    for key, tensor in encoder.model.state_dict().items():
        data = tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
        name = plan.tensor_names[key]
        if plan.permute_qk and name.endswith(("attn_q.weight", "attn_q.bias")):
            data = interleave_rope_rows(data, int(config.num_attention_heads))
        elif plan.permute_qk and name.endswith(("attn_k.weight", "attn_k.bias")):
            data = interleave_rope_rows(data, int(config.num_key_value_heads))
        yield key, data


def _write_metadata(writer, encoder, plan: ExportPlan, name: str) -> None:
    import gguf

    config = encoder.model.config
    writer.add_name(name)
    writer.add_description(
        "Bidirectional text encoder exported by decoder2vec"
        if not plan.causal
        else "Text encoder exported by decoder2vec"
    )
    writer.add_context_length(plan.context_length)
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(config.num_key_value_heads))
    writer.add_key_length(head_dim(config))
    writer.add_value_length(head_dim(config))
    writer.add_rope_dimension_count(head_dim(config))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(len(plan.tokenizer.tokens))
    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    writer.add_file_type(file_types[plan.outtype])
    if plan.outtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # What makes it an encoder in llama.cpp: attention mask and pooling come from these two keys.
    writer.add_causal_attention(plan.causal)
    writer.add_pooling_type(gguf.PoolingType(POOLING_TYPES[plan.pooling]))
    plan.tokenizer.write(writer)


def export_gguf(
    encoder,
    out: str | Path,
    *,
    outtype: str = "f16",
    pooling: str | None = None,
    name: str | None = None,
) -> ExportResult:
    """Write ``encoder`` to ``out`` as a llama.cpp embedding model (atomically) and describe the result.

    ``pooling`` overrides the encoder's pooling; ``outtype`` is f32, f16 or q8_0 (norms stay f32).
    """
    import gguf

    plan = plan_export(encoder, outtype, pooling)
    out = check_out_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    label = (
        name or Path(str(getattr(encoder.model.config, "_name_or_path", "") or "encoder")).name or "encoder"
    )
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # Two passes so only one tensor is converted in memory at a time: the tensor table first
        # (shapes and byte sizes are known without converting), then each tensor's data.
        writer = gguf.GGUFWriter(tmp, plan.arch)
        _write_metadata(writer, encoder, plan, label)
        types = {}
        for key, tensor in encoder.model.state_dict().items():
            shape = tuple(tensor.shape)
            qtype = types[key] = tensor_type(shape, plan.outtype)
            nbytes = int(np.prod(gguf.quants.quant_shape_to_byte_shape(shape, qtype)))
            writer.add_tensor_info(
                plan.tensor_names[key], shape, np.dtype(np.float32), nbytes, raw_dtype=qtype
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for key, data in _tensors(encoder, plan):
            writer.write_tensor_data(convert_tensor(data, types[key]))
        writer.close()
        fsync_file(tmp)  # on disk before the rename publishes it
        os.chmod(tmp, file_mode())  # mkstemp makes it private (0600); the umask decides, as for open()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%s, %s, pooling %s)", out, plan.arch, plan.outtype, plan.pooling)
    return ExportResult(
        out, plan.arch, plan.outtype, plan.pooling, plan.causal, len(types), out.stat().st_size
    )
