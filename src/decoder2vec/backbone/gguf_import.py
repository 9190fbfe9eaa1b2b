"""Convert a GGUF decoder (as transformers reads it) into a plain safetensors model folder."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from decoder2vec.backbone.cache import cache_home, publish_folder
from decoder2vec.errors import ModelLoadError

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


def check_gguf_file(path: Path) -> Path:
    """Fail early, naming the file, when it is missing or not a GGUF container."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    return path.resolve()


def import_gguf(
    gguf_file: str | Path,
    out_dir: str | Path,
    *,
    eos_token: str | None = None,
    pad_token: str | None = None,
) -> Path:
    """Dequantize ``gguf_file`` to an fp32 safetensors folder at ``out_dir`` (written atomically).

    The folder holds the causal-LM weights (so MNTP training can use the LM head), config and
    tokenizer. ``eos_token``/``pad_token`` override what the GGUF metadata says; without a pad token
    the eos token is used, since padding is always masked out anyway.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = check_gguf_file(Path(gguf_file))
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        raise ModelLoadError(f"output folder {out} already exists and is not empty; refusing to overwrite it")
    if out.exists():
        out.rmdir()

    def build(tmp: Path) -> None:
        folder, name = str(gguf_path.parent), gguf_path.name
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        except Exception as exc:  # transformers raises many types for a bad file; name the file in one
            raise ModelLoadError(f"transformers could not read GGUF file {gguf_path}: {exc}") from exc
        fix_special_tokens(tokenizer, model.config, eos_token=eos_token, pad_token=pad_token)
        # The weights are already dequantized to fp32; drop the GGUF quantizer marks so the model
        # saves as an ordinary (and portable) safetensors checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        log.info("converted %s to %s", gguf_path, out)

    return publish_folder(out, build)


def fix_special_tokens(tokenizer, config, *, eos_token: str | None, pad_token: str | None) -> None:
    """Set eos/pad explicitly on both tokenizer and config, so they can never disagree."""
    if eos_token is not None:
        _require_token(tokenizer, eos_token)
        tokenizer.eos_token = eos_token
    if pad_token is not None:
        _require_token(tokenizer, pad_token)
        tokenizer.pad_token = pad_token
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    generation = getattr(config, "generation_config", None)
    if generation is not None:
        generation.eos_token_id = tokenizer.eos_token_id
        generation.pad_token_id = tokenizer.pad_token_id


def _require_token(tokenizer, token: str) -> None:
    ids = tokenizer.convert_tokens_to_ids([token])
    if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id and token != tokenizer.unk_token:
        raise ModelLoadError(f"token {token!r} is not in the tokenizer's vocabulary")


def cached_gguf_folder(gguf_file: Path) -> Path:
    """Cache location for a user's GGUF file, keyed on its path, size and mtime (hashing GBs is slow)."""
    gguf_path = check_gguf_file(gguf_file)
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_home() / "gguf" / f"{gguf_path.stem}-{key}"
