"""The GGUF writer on tiny models: metadata, tensor names and types, errors before writing, atomicity."""

from __future__ import annotations

import numpy as np
import pytest

from decoder2vec import Encoder
from decoder2vec.errors import ConfigError, ModelLoadError
from decoder2vec.export.gguf import export_gguf, interleave_rope_rows, plan_export
from tests.export.conftest import EXPORTABLE


class Fields:
    """A GGUF file's metadata, decoded on access (decoding all 49k-entry token arrays takes seconds)."""

    def __init__(self, reader) -> None:
        self.reader = reader

    def __getitem__(self, key: str):
        return self.reader.fields[key].contents()

    def first(self, key: str):
        return self.reader.fields[key].contents(0)

    def length(self, key: str) -> int:
        return len(self.reader.fields[key].data)


def read(path):
    import gguf

    reader = gguf.GGUFReader(path)
    return Fields(reader), {t.name: t for t in reader.tensors}


@pytest.fixture(scope="module")
def encoders(byte_level_factory):
    """One loaded encoder per family (loading dominates these tests' time)."""
    cache = {}

    def get(family: str) -> Encoder:
        if family not in cache:
            cache[family] = Encoder.from_pretrained(byte_level_factory(family))
        return cache[family]

    return get


@pytest.mark.parametrize("family", EXPORTABLE)
def test_metadata_and_tensors(encoders, tmp_path, family):
    encoder = encoders(family)
    result = export_gguf(encoder, tmp_path / "m.gguf", outtype="f32", pooling="last_token")
    fields, tensors = read(result.path)
    arch = {"mistral": "llama"}.get(family, family)
    assert result.arch == fields["general.architecture"] == arch
    assert fields[f"{arch}.attention.causal"] is False and fields[f"{arch}.pooling_type"] == 3  # LAST
    assert fields[f"{arch}.block_count"] == 2 and fields[f"{arch}.embedding_length"] == 32
    assert fields[f"{arch}.attention.head_count"] == 4 and fields[f"{arch}.attention.head_count_kv"] == 2
    assert fields[f"{arch}.attention.key_length"] == 8 and fields[f"{arch}.rope.dimension_count"] == 8
    # transformers loads qwen2 folders with its Qwen2 tokenizer class, whose pre-tokenizer is a Split regex
    pre = {"qwen2": "qwen2"}.get(family, "gpt-2")
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == pre
    assert fields["tokenizer.ggml.add_bos_token"] is False and fields["tokenizer.ggml.add_eos_token"] is False
    assert fields.length("tokenizer.ggml.tokens") == encoder.model.config.vocab_size
    assert (
        fields.first("tokenizer.ggml.tokens") == "<|endoftext|>"
        and fields.first("tokenizer.ggml.token_type") == 3
    )
    expected = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{part}.weight"
        for i in range(2)
        for part in (
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        )
    }
    if family == "qwen2":
        expected |= {f"blk.{i}.attn_{p}.bias" for i in range(2) for p in "qkv"}
    if family == "qwen3":
        expected |= {f"blk.{i}.attn_{p}_norm.weight" for i in range(2) for p in "qk"}
    assert set(tensors) == expected
    # ggml lists dimensions fastest first: a (rows=out, cols=in) matrix has shape [in, out]
    assert list(tensors["blk.0.attn_k.weight"].shape) == [32, 16]
    assert list(tensors["token_embd.weight"].shape) == [32, encoder.model.config.vocab_size]


def test_bos_added_by_the_tokenizer_is_carried_over(byte_level_factory, tmp_path):
    encoder = Encoder.from_pretrained(byte_level_factory("llama", add_bos=True))
    fields, _ = read(export_gguf(encoder, tmp_path / "m.gguf").path)
    assert fields["tokenizer.ggml.add_bos_token"] is True and fields["tokenizer.ggml.bos_token_id"] == 1
    encoder.append_eos = True  # the encoder's own EOS becomes llama.cpp's add_eos_token
    fields, _ = read(export_gguf(encoder, tmp_path / "m.gguf").path)
    assert fields["tokenizer.ggml.add_eos_token"] is True and fields["tokenizer.ggml.eos_token_id"] == 2


def test_outtypes_keep_norms_in_f32(encoders, tmp_path):
    import gguf

    encoder = encoders("llama")
    for outtype, matrix_type, file_type in (("f16", "F16", 1), ("q8_0", "Q8_0", 7)):
        fields, tensors = read(export_gguf(encoder, tmp_path / f"{outtype}.gguf", outtype=outtype).path)
        assert fields["general.file_type"] == file_type
        assert tensors["blk.0.attn_q.weight"].tensor_type.name == matrix_type
        assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    q = tensors["blk.1.ffn_down.weight"]
    restored = gguf.quants.dequantize(q.data, q.tensor_type)
    original = encoder.model.state_dict()["layers.1.mlp.down_proj.weight"].numpy()
    assert np.abs(restored - original).max() < np.abs(original).max() / 100  # int8 with one scale per 32


def rope_rotate_half(x: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """HF RoPE on one head's vector: pairs (i, i + d/2)."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate(
        [a * np.cos(angles) - b * np.sin(angles), b * np.cos(angles) + a * np.sin(angles)], -1
    )


def rope_interleaved(x: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """llama.cpp NORM RoPE: pairs (2i, 2i + 1)."""
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = (
        a * np.cos(angles) - b * np.sin(angles),
        b * np.cos(angles) + a * np.sin(angles),
    )
    return out


def test_rope_row_interleaving_matches_the_two_rope_conventions():
    rng = np.random.default_rng(0)
    n_heads, dim, cols = 3, 8, 5
    weight = rng.normal(size=(n_heads * dim, cols))
    x = rng.normal(size=cols)
    angles = rng.uniform(0, 6, size=dim // 2)
    hf = np.stack([rope_rotate_half(h, angles) for h in (weight @ x).reshape(n_heads, dim)])
    permuted = interleave_rope_rows(weight, n_heads)
    cpp = np.stack([rope_interleaved(h, angles) for h in (permuted @ x).reshape(n_heads, dim)])
    # Same rotated features, in llama.cpp's order; attention scores (dot products) are therefore equal.
    np.testing.assert_allclose(np.sort(hf.ravel()), np.sort(cpp.ravel()))
    np.testing.assert_allclose(interleave_rope_rows(weight, n_heads)[[0, 1, 2, 3]], weight[[0, 4, 1, 5]])


@pytest.mark.parametrize("family", ["gemma", "gemma2"])
def test_unsupported_architecture_fails_before_writing(tiny_model_factory, tmp_path, family):
    encoder = Encoder.from_pretrained(tiny_model_factory(family, "eager"))
    with pytest.raises(ModelLoadError, match=f"'{family}'.*not supported yet"):
        export_gguf(encoder, tmp_path / "m.gguf")
    assert list(tmp_path.iterdir()) == []


def test_non_byte_level_tokenizer_is_rejected(tiny_llama, tmp_path):
    with pytest.raises(ModelLoadError, match="byte-level BPE"):
        export_gguf(Encoder.from_pretrained(tiny_llama), tmp_path / "m.gguf")
    assert list(tmp_path.iterdir()) == []


def test_weighted_mean_and_bad_outtype_are_config_errors(encoders):
    encoder = encoders("llama")
    with pytest.raises(ConfigError, match="weighted_mean.*no llama.cpp equivalent"):
        plan_export(encoder, pooling="weighted_mean")
    with pytest.raises(ConfigError, match="q4_k"):
        plan_export(encoder, outtype="q4_k", pooling="mean")
    assert plan_export(encoder, pooling="bos").pooling == "bos"


def test_failed_write_leaves_no_file(encoders, tmp_path, monkeypatch):
    import decoder2vec.export.gguf as module

    encoder = encoders("llama")
    (tmp_path / "m.gguf").write_bytes(b"previous")

    def broken(data, qtype):
        raise RuntimeError("disk full")

    monkeypatch.setattr(module, "convert_tensor", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_gguf(encoder, tmp_path / "m.gguf")
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"] and (
        tmp_path / "m.gguf"
    ).read_bytes() == b"previous"


def test_causal_encoder_exports_causal(encoders, tmp_path):
    from decoder2vec.backbone.bidirectional import set_bidirectional

    encoder = encoders("qwen3")
    set_bidirectional(encoder.model, False)
    try:
        fields, _ = read(export_gguf(encoder, tmp_path / "m.gguf").path)
    finally:
        set_bidirectional(encoder.model, True)
    assert fields["qwen3.attention.causal"] is True
