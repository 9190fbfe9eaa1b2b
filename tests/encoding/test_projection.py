"""The output projection after pooling (a distilled student's map into its teacher's space): every path that
embeds applies it, a save records it where sentence-transformers reads it, and a damaged one fails early."""

import json
import shutil

import numpy as np
import pytest

from decoder2vec import Encoder
from decoder2vec.errors import InputError
from tests.conftest import SENTENCES


@pytest.fixture(scope="module")
def plain(tiny_llama):
    return Encoder.from_pretrained(tiny_llama)


def weight(rows: int, cols: int = 32) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)


def projected(tiny_llama, w: np.ndarray) -> Encoder:
    enc = Encoder.from_pretrained(tiny_llama)
    enc.projection = w
    return enc


@pytest.mark.parametrize("rows", [32, 12])  # as wide as the model, and narrower
def test_encode_equals_pooled_vectors_times_the_matrix(tiny_llama, plain, rows):
    w = weight(rows)
    enc = projected(tiny_llama, w)
    assert enc.embedding_dim == rows
    raw = plain.encode(SENTENCES)
    np.testing.assert_allclose(enc.encode(SENTENCES), raw @ w.T, atol=1e-5)
    # the output step works on the projected width: truncate then normalize, int8 ranges, Matryoshka checks
    cut = raw @ w.T[:, :8]
    np.testing.assert_allclose(
        enc.encode(SENTENCES, dimensions=8, normalize=True),
        cut / np.linalg.norm(cut, axis=1, keepdims=True),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match=rf"outside \[1, {rows}\]"):
        enc.encode(SENTENCES, dimensions=rows + 1)


def test_late_chunking_projects_each_chunk(tiny_llama, plain):
    w = weight(20)
    enc = projected(tiny_llama, w)
    doc = " ".join(SENTENCES)
    mine = np.stack([c.embedding for c in enc.encode_chunks(doc, chunking="tokens", chunk_size=6)])
    theirs = np.stack([c.embedding for c in plain.encode_chunks(doc, chunking="tokens", chunk_size=6)])
    assert mine.shape == (len(theirs), 20)
    np.testing.assert_allclose(mine, theirs @ w.T, atol=1e-5)


def test_save_reload_and_sentence_transformers_apply_it(tiny_llama, tmp_path):
    from sentence_transformers import SentenceTransformer

    w = weight(24)
    enc = projected(tiny_llama, w)
    enc.save(tmp_path / "enc")
    saved = json.loads((tmp_path / "enc" / "decoder2vec_config.json").read_text())
    assert saved["projection"] == {"in_features": 32, "out_features": 24}
    reloaded = Encoder.from_pretrained(tmp_path / "enc")
    np.testing.assert_array_equal(reloaded.projection, w)
    np.testing.assert_allclose(reloaded.encode(SENTENCES), enc.encode(SENTENCES), atol=1e-6)
    # sentence-transformers' own Transformer -> Pooling -> Dense modules, no trust_remote_code
    st = SentenceTransformer(str(tmp_path / "enc"), device="cpu")
    assert st.encode(SENTENCES[:1]).shape == (1, 24)
    np.testing.assert_allclose(st.encode(SENTENCES, batch_size=3), enc.encode(SENTENCES), atol=1e-5)
    st8 = SentenceTransformer(str(tmp_path / "enc"), device="cpu", truncate_dim=8)
    np.testing.assert_allclose(
        st8.encode(SENTENCES, normalize_embeddings=True),
        enc.encode(SENTENCES, dimensions=8, normalize=True),
        atol=1e-5,
    )


def test_overwriting_with_an_encoder_without_projection_removes_it(tiny_llama, plain, tmp_path):
    projected(tiny_llama, weight(16)).save(tmp_path / "enc")
    plain.save(tmp_path / "enc", overwrite=True)
    assert not (tmp_path / "enc" / "2_Dense").exists()
    assert "Dense" not in (tmp_path / "enc" / "modules.json").read_text()
    reloaded = Encoder.from_pretrained(tmp_path / "enc")
    assert reloaded.projection is None and reloaded.embedding_dim == 32


def test_wrong_shapes_and_damaged_files_are_named(tiny_llama, tmp_path):
    enc = Encoder.from_pretrained(tiny_llama)
    with pytest.raises(ValueError, match=r"\(out, 32\) matrix .* got shape \(8, 31\)"):
        enc.projection = weight(8, 31)
    projected(tiny_llama, weight(16)).save(tmp_path / "enc")
    weights = tmp_path / "enc" / "2_Dense" / "model.safetensors"
    weights.write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="2_Dense/model.safetensors is not a readable safetensors file"):
        Encoder.from_pretrained(tmp_path / "enc")
    shutil.rmtree(tmp_path / "enc" / "2_Dense")
    with pytest.raises(InputError, match="records a projection but .*2_Dense/model.safetensors is missing"):
        Encoder.from_pretrained(tmp_path / "enc")


def test_corpus_and_export_read_the_width_from_the_files(tiny_llama, tmp_path):
    from decoder2vec.corpus.model_info import describe_model
    from decoder2vec.errors import ConfigError
    from decoder2vec.export.gguf import check_before_loading

    projected(tiny_llama, weight(12)).save(tmp_path / "enc")
    assert describe_model(str(tmp_path / "enc"))["dimension"] == 12
    with pytest.raises(ConfigError, match="output projection after pooling"):
        check_before_loading(str(tmp_path / "enc"), "f16", None)
