"""Convert a GGUF decoder (as transformers reads it) into a plain safetensors model folder."""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from pathlib import Path

from decoder2vec.backbone.cache import cache_home, publish_folder
from decoder2vec.errors import ModelLoadError, OutputExistsError

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
# v2: the imported folder records the GGUF's attention mode and pooling (decoder2vec_config.json)
_IMPORT_VERSION = "v2"


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


def open_gguf(path: Path):
    """``gguf.GGUFReader`` over ``path``; a file cut short or damaged is a :class:`ModelLoadError` naming
    it (the reader itself fails with numpy's "cannot reshape array" or struct's "unpack requires")."""
    import gguf

    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError, struct.error) as exc:
        raise ModelLoadError(
            f"GGUF file {path} is truncated or corrupt ({path.stat().st_size} bytes; reading it failed: "
            f"{exc}); download or export it again"
        ) from None


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
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = check_gguf_file(Path(gguf_file))
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output folder {out} is a file; give the name of a new folder")
    if out.exists() and any(out.iterdir()):
        raise ModelLoadError(f"output folder {out} already exists and is not empty; refusing to overwrite it")
    open_gguf(gguf_path)  # a truncated file fails here, naming it, before any work
    if out.exists():
        out.rmdir()

    def build(tmp: Path) -> None:
        folder, name = str(gguf_path.parent), gguf_path.name
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            config = AutoConfig.from_pretrained(folder, gguf_file=name)
            set_head_dim(config, gguf_path)
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, config=config, dtype=torch.float32
            )
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
        write_encoder_settings(tmp, read_encoder_settings(gguf_path))
        log.info("converted %s to %s", gguf_path, out)

    return publish_folder(out, build)


def set_head_dim(config, gguf_path: Path) -> None:
    """Take the head size from ``{arch}.attention.key_length`` when the file has it.

    transformers maps it for no architecture and maps ``rope.dimension_count`` only for Llama/Mistral,
    so a Qwen3 file whose heads are not 128 wide (Qwen3Config's default) would load with wrong shapes.
    """
    import gguf

    fields = open_gguf(gguf_path).fields
    arch = fields.get(gguf.Keys.General.ARCHITECTURE)
    key_length = arch and fields.get(gguf.Keys.Attention.KEY_LENGTH.format(arch=arch.contents()))
    if key_length and hasattr(config, "head_dim"):
        config.head_dim = int(key_length.contents())


def read_encoder_settings(gguf_path: Path) -> dict:
    """Encoder settings recorded in a GGUF's metadata (as ``decoder2vec export gguf`` writes them).

    llama.cpp keys: ``{arch}.attention.causal`` (false = bidirectional) and ``{arch}.pooling_type``
    (MEAN/CLS/LAST map to mean/bos/last_token). A key that is absent, or NONE pooling, says nothing.
    """
    import gguf

    from decoder2vec.encoder_config import GGUF_POOLING_NAMES as POOLING_NAMES

    fields = open_gguf(gguf_path).fields
    arch_field = fields.get(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None:
        return {}
    arch = arch_field.contents()
    settings: dict = {}
    causal = fields.get(gguf.Keys.Attention.CAUSAL.format(arch=arch))
    if causal is not None:
        settings["bidirectional"] = not bool(causal.contents())
    pooling = fields.get(gguf.Keys.LLM.POOLING_TYPE.format(arch=arch))
    if pooling is not None and int(pooling.contents()) in POOLING_NAMES:
        settings["pooling"] = POOLING_NAMES[int(pooling.contents())]
    return settings


def write_encoder_settings(folder: Path, settings: dict) -> None:
    """Record ``settings`` in the folder's encoder config, which ``Encoder.from_pretrained`` reads."""
    if not settings:
        return
    from decoder2vec.encoder_config import ENCODER_CONFIG

    (Path(folder) / ENCODER_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")


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
    """Cache location for a user's GGUF file, keyed on its path, size, mtime and inode (hashing GBs is slow).

    The inode changes when a file is replaced atomically (as the exporter does), even within one mtime
    tick; ``_IMPORT_VERSION`` changes when the import itself does, so older caches are not reused.
    """
    gguf_path = check_gguf_file(gguf_file)
    stat = gguf_path.stat()
    identity = f"{_IMPORT_VERSION}|{gguf_path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cache_home() / "gguf" / f"{gguf_path.stem}-{key}"
