"""Load a decoder backbone and its tokenizer from an alias, a GGUF file, a folder or a hub id."""

from __future__ import annotations

import logging
import pickle
import warnings
from pathlib import Path

import torch

from decoder2vec.backbone.adapters import merge_adapters
from decoder2vec.backbone.bidirectional import AttentionCheck, set_bidirectional, verify_attention
from decoder2vec.errors import ConfigError, ModelLoadError
from decoder2vec.spec.source import resolve_model_path  # (torch-free, re-exported: every loader starts there)

log = logging.getLogger(__name__)

# Families whose bidirectional mode is exercised by the test suite. Others may work (the
# self-check decides) but get a warning.
TESTED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")


def _cache_hint(path: str) -> str:
    from decoder2vec.backbone.cache import cache_home

    inside = Path(path).resolve().is_relative_to(cache_home().resolve())
    return f"; this is decoder2vec's cache: delete {path} and it is rebuilt on the next use" if inside else ""


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are orders of magnitude slower there), bf16 on GPUs that have it."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """The torch dtype for ``dtype`` (a dtype, its name, or None: :func:`default_dtype`)."""
    if dtype is None:
        return default_dtype(device)
    if isinstance(dtype, str):
        value = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(value, torch.dtype):
            raise ConfigError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        return value
    return dtype


def load_tokenizer(path: str):
    """The model's tokenizer, with a pad token guaranteed (padding is always masked, so eos serves)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"could not load a tokenizer from {path}: {exc}") from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"the tokenizer in {path} has neither a pad nor an eos token; set one")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_backbone(
    name_or_path: str | Path,
    *,
    bidirectional: bool = True,
    with_lm_head: bool = False,
    adapters: list[str | Path] | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
    verify: bool = True,
):
    """Load ``(model, tokenizer)`` in the requested attention mode, verified by a probe.

    ``with_lm_head`` gives the causal-LM class (needed for MNTP); otherwise the bare transformer
    whose last hidden states are pooled into embeddings. ``adapters`` are PEFT folders merged in order.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = resolve_model_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"could not read a model config from {path}: {exc}") from exc
    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False) or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(
            f"{path} holds a '{model_type}' model, which is not a decoder-only language model "
            f"(supported and tested: {', '.join(TESTED_FAMILIES)})"
        )
    if model_type not in TESTED_FAMILIES:
        warnings.warn(
            f"architecture '{model_type}' is untested with decoder2vec; the attention self-check decides",
            stacklevel=2,
        )
    set_bidirectional(config, bidirectional)
    config.use_cache = False  # encoders and training never reuse a KV cache

    torch_device = resolve_device(device)
    kwargs = {"config": config, "dtype": resolve_dtype(dtype, torch_device)}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model_class = AutoModelForCausalLM if with_lm_head else AutoModel
    try:
        model = _quiet_load(model_class, path, kwargs)
    except pickle.UnpicklingError:
        # torch's weights-only loader refused objects other than tensors; its message advises turning
        # the check off, which would let the file run code. One line of our own instead.
        raise ModelLoadError(
            f"refusing to load {_pickle_files(path)}: the pickled weights hold objects other than tensors, "
            "and loading them could run code; use a safetensors copy of the model"
        ) from None
    except Exception as exc:
        raise ModelLoadError(f"could not load model weights from {path}: {exc}{_cache_hint(path)}") from exc
    model.to(torch_device).eval()
    tokenizer = load_tokenizer(path)
    if adapters:
        model = merge_adapters(model, adapters)
    if verify:
        verify_attention(model, bidirectional, set(tokenizer.all_special_ids))
    return model, tokenizer


def _pickle_files(path: str) -> str:
    """The pickle weight files of a local model folder (for a message), or the path itself."""
    folder = Path(path)
    found = (
        sorted(p for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth")) if folder.is_dir() else []
    )
    return ", ".join(map(str, found)) or path


def _quiet_load(model_class, path: str, kwargs: dict):
    """``from_pretrained`` without transformers' LOAD REPORT table (which lists the LM head as
    "unexpected" whenever the bare model is loaded from a causal-LM checkpoint, i.e. always here);
    weights that are really missing get one line instead."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(path, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
    missing = sorted(_info_keys(info, "missing_keys"))
    if missing:
        warnings.warn(
            f"{path}: {len(missing)} weight(s) missing from the checkpoint were initialised randomly "
            f"(e.g. {', '.join(missing[:3])})",
            stacklevel=3,
        )
    return model


def _info_keys(info, name: str):
    return info.get(name, ()) if isinstance(info, dict) else getattr(info, name, ())


def check_attention(model, tokenizer) -> AttentionCheck:
    """Re-run the self-check for the mode the model is configured for (used by ``decoder2vec info``)."""
    from decoder2vec.backbone.bidirectional import is_bidirectional

    return verify_attention(model, is_bidirectional(model), set(tokenizer.all_special_ids))


def save_backbone(model, tokenizer, folder: Path) -> None:
    """Write the bare backbone (safetensors, config.json with both attention flags) and the tokenizer
    (right padding: what sentence-transformers pads with) into ``folder``."""
    from decoder2vec.backbone.bidirectional import backbone_of, is_bidirectional

    model = backbone_of(model)
    # Write both flags explicitly (even when is_causal was only implied), so other engines read them too.
    set_bidirectional(model, is_bidirectional(model))
    model.save_pretrained(folder, safe_serialization=True)
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        tokenizer.save_pretrained(folder)
    finally:
        tokenizer.padding_side = side
