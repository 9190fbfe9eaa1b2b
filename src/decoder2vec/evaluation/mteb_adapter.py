"""An adapter that lets ``mteb.evaluate`` run a decoder2vec encoder (mteb 2.x encoder protocol).

Instructions follow LLM2Vec: queries (and symmetric tasks such as STS) get the task's instruction, documents
get none. The instruction is passed to the encoder as ``instruction=``, so it is attended to but never pooled.
This module imports ``mteb``; :func:`decoder2vec.evaluation.mteb_model` imports it only when called.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from decoder2vec.evaluation.encoders import SentenceTransformerEncoder, TextEncoder
from decoder2vec.evaluation.instructions import format_instruction, load_instructions

# The core rejects empty texts; a few MTEB corpora contain some. One fixed stand-in keeps a long run going and
# gives every empty document the same vector, which is what "no content" should look like.
EMPTY_TEXT_STANDIN = "(empty)"


class MTEBEncoder(AbsEncoder):
    """mteb ``EncoderProtocol`` implementation around any :class:`TextEncoder`."""

    def __init__(
        self,
        encoder: TextEncoder,
        *,
        instructions: str | Path | dict[str, Any] | None = None,
        use_instructions: bool = True,
        batch_size: int = 32,
        model_name: str | None = None,
        revision: str | None = None,
    ) -> None:
        self.model = encoder
        self.batch_size = batch_size
        self.use_instructions = use_instructions
        if isinstance(instructions, dict):
            # a dict overrides entries of the packaged table; the rest (e.g. the per-type fallbacks) stays
            packaged = load_instructions()
            self.instructions = {
                key: {**packaged[key], **instructions.get(key, {})} for key in ("tasks", "task_types")
            }
        else:
            self.instructions = load_instructions(None if instructions is None else str(instructions))
        name = model_name or _default_name(encoder)
        inner = getattr(encoder, "model", None)
        config = getattr(inner, "config", None)
        self.mteb_model_meta = ModelMeta.create_empty(
            {
                "name": name if "/" in name else f"decoder2vec/{name}",
                "revision": revision or "local",
                "similarity_fn_name": ScoringFunction.COSINE,
                "framework": ["PyTorch"],
                "use_instructions": use_instructions,
                "embed_dim": getattr(encoder, "embedding_dim", getattr(config, "hidden_size", None)),
                "max_tokens": getattr(encoder, "max_length", None),
                "open_weights": True,
            }
        )

    def instruction(self, task_metadata: Any, prompt_type: PromptType | None) -> str | None:
        """The formatted instruction for this task and side, or ``None`` (documents, or none known)."""
        if not self.use_instructions or prompt_type == PromptType.document:
            return None
        raw = self.instructions["tasks"].get(task_metadata.name)
        if raw is None:
            # the task's own prompt, then our default for its type
            prompt = task_metadata.prompt
            if isinstance(prompt, dict):
                prompt = prompt.get(PromptType.query.value)
            raw = prompt or self.instructions["task_types"].get(task_metadata.type)
        return format_instruction(raw)

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        texts = [
            t if isinstance(t, str) and t.strip() else EMPTY_TEXT_STANDIN
            for batch in inputs
            for t in batch["text"]
        ]
        emb = self.model.encode(
            texts,
            instruction=self.instruction(task_metadata, prompt_type),
            batch_size=int(kwargs.get("batch_size") or self.batch_size),
            show_progress_bar=kwargs.get("show_progress_bar"),
        )
        return np.asarray(emb, dtype=np.float32)


def _default_name(encoder: Any) -> str:
    inner = getattr(encoder, "model", None)
    path = (
        getattr(getattr(inner, "config", None), "_name_or_path", "")
        or getattr(encoder, "name", "")
        or "encoder"
    )
    return os.path.basename(str(path).rstrip("/")) or "encoder"


def make_mteb_model(model_or_encoder: Any, **kwargs: Any) -> MTEBEncoder:
    """Build an :class:`MTEBEncoder` from an encoder object, a sentence-transformers model, or a model path."""
    adapter_keys = {"instructions", "use_instructions", "batch_size", "model_name", "revision"}
    adapter_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in adapter_keys}
    encoder = model_or_encoder
    if isinstance(model_or_encoder, str | Path):
        from decoder2vec import Encoder

        encoder = Encoder.from_pretrained(model_or_encoder, **kwargs)
        adapter_kwargs.setdefault("model_name", Path(str(model_or_encoder)).name or str(model_or_encoder))
    elif kwargs:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(kwargs)} for an already-built encoder")
    elif type(model_or_encoder).__name__ == "SentenceTransformer":
        encoder = SentenceTransformerEncoder(model_or_encoder)
    if not hasattr(encoder, "encode"):
        raise TypeError(
            f"{type(encoder).__name__} has no encode(); pass an Encoder, a SentenceTransformer or a path"
        )
    return MTEBEncoder(encoder, **adapter_kwargs)
