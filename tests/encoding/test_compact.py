"""Compact output: Matryoshka truncation and int8/binary quantization, against sentence-transformers' own
functions on the same floats, through ``encode``, ``save`` and ``SentenceTransformer(truncate_dim=)``."""

import json

import numpy as np
import pytest
from sentence_transformers.quantization import quantize_embeddings

from decoder2vec import Encoder
from decoder2vec.encoding.compact import OutputSpec, calibration_ranges, finish, quantize, truncate_normalize
from tests.conftest import SENTENCES

PRECISIONS = ["int8", "uint8", "binary", "ubinary"]


@pytest.fixture(scope="module")
def encoder(tiny_llama):
    return Encoder.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def floats():
    rng = np.random.default_rng(0)
    return rng.normal(size=(200, 48)).astype(np.float32)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_quantize_equals_sentence_transformers(floats, precision):
    sample, rows = floats[:150], floats[150:]
    ranges = np.vstack([sample.min(0), sample.max(0)])
    expected = quantize_embeddings(rows, precision=precision, ranges=ranges)
    got = quantize(rows, precision, ranges)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_constant_dimension_and_out_of_range_values_are_clipped(floats):
    ranges = np.vstack([floats.min(0), floats.max(0)])
    ranges[:, 0] = 0.5  # a dimension that never varied in the sample
    got = quantize(floats * 10, "uint8", ranges)
    np.testing.assert_array_equal(got, quantize_embeddings(floats * 10, precision="uint8", ranges=ranges))
    assert got.min() == 0 and got.max() == 255


def test_truncation_is_prefix_then_normalize(floats):
    got = truncate_normalize(floats, 16, True)
    prefix = floats[:, :16]
    np.testing.assert_allclose(got, prefix / np.linalg.norm(prefix, axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(truncate_normalize(floats, None, False), floats)


def test_calibration_ranges_see_what_encode_outputs(floats):
    ranges = calibration_ranges(floats, 8, True)
    seen = truncate_normalize(floats, 8, True)
    np.testing.assert_array_equal(ranges, np.vstack([seen.min(0), seen.max(0)]))


def test_int8_needs_ranges():
    with pytest.raises(ValueError, match="calibrate"):
        OutputSpec(precision="int8")


@pytest.mark.parametrize("precision", ["float32", *PRECISIONS])
def test_encode_dimensions_and_precision(encoder, precision):
    encoder.calibrate(SENTENCES * 3)
    full = encoder.encode(SENTENCES)
    got = encoder.encode(SENTENCES, dimensions=16, normalize=True, precision=precision)
    seen = truncate_normalize(full, 16, True)
    if precision == "float32":
        np.testing.assert_allclose(got, seen, atol=1e-6)
        return
    ranges = calibration_ranges(encoder.calibration, 16, True)
    np.testing.assert_array_equal(got, quantize_embeddings(seen, precision=precision, ranges=ranges))
    assert encoder.encode(SENTENCES[0], dimensions=16, precision=precision).ndim == 1


def test_explicit_ranges_win_over_calibration(encoder):
    encoder.calibrate(SENTENCES * 3)
    ranges = np.vstack([np.full(32, -1.0), np.full(32, 1.0)]).astype(np.float32)
    got = encoder.encode(SENTENCES, precision="int8", ranges=ranges)
    np.testing.assert_array_equal(got, quantize_embeddings(encoder.encode(SENTENCES), "int8", ranges=ranges))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dimensions": 0}, ValueError, "outside"),
        ({"dimensions": -3}, ValueError, "outside"),
        ({"dimensions": 33}, ValueError, "outside"),
        ({"dimensions": 8.0}, TypeError, "integer"),
        ({"dimensions": True}, TypeError, "integer"),
        ({"precision": "int4"}, ValueError, "unknown precision"),
    ],
)
def test_bad_output_options_fail_before_any_work(encoder, kwargs, error, match):
    with pytest.raises(error, match=match):
        encoder.encode(["", 3], **kwargs)  # bad texts too: the options are checked first


def test_int8_without_calibration_says_what_to_pass(tiny_llama):
    fresh = Encoder.from_pretrained(tiny_llama)
    with pytest.raises(ValueError, match=r"calibrate\(sample_texts\).*ranges="):
        fresh.encode(SENTENCES, precision="int8")


def test_save_records_matryoshka_and_calibration(tiny_llama, tmp_path):
    enc = Encoder.from_pretrained(tiny_llama)
    enc.matryoshka_dimensions = [8, 32, 16]
    enc.calibrate(SENTENCES * 2)
    enc.save(tmp_path / "enc")
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["matryoshka_dimensions"] == [32, 16, 8]  # the field vLLM reads
    ours = json.loads((tmp_path / "enc" / "decoder2vec_config.json").read_text())
    assert ours["matryoshka_dimensions"] == [32, 16, 8]
    loaded = Encoder.from_pretrained(tmp_path / "enc")
    assert loaded.matryoshka_dimensions == [32, 16, 8]
    np.testing.assert_array_equal(loaded.calibration, enc.calibration)
    np.testing.assert_array_equal(
        loaded.encode(SENTENCES, precision="uint8", dimensions=8),
        enc.encode(SENTENCES, precision="uint8", dimensions=8),
    )
    # a later save without them removes the old files' claims
    loaded.matryoshka_dimensions, loaded.calibration = None, None
    loaded.save(tmp_path / "enc", overwrite=True)
    assert "matryoshka_dimensions" not in json.loads((tmp_path / "enc" / "config.json").read_text())
    assert not (tmp_path / "enc" / "decoder2vec_calibration.npy").exists()


def test_bad_matryoshka_dimensions(encoder):
    with pytest.raises(ValueError, match="distinct integers"):
        encoder.matryoshka_dimensions = [64]
    with pytest.raises(ValueError, match="distinct integers"):
        encoder.matryoshka_dimensions = [16, 16]


@pytest.mark.parametrize("dim", [8, 16])
def test_sentence_transformers_truncate_dim_matches_encode(tiny_llama, tmp_path, dim):
    from sentence_transformers import SentenceTransformer

    enc = Encoder.from_pretrained(tiny_llama)
    enc.matryoshka_dimensions = [32, 16, 8]
    enc.save(tmp_path / "enc")
    st = SentenceTransformer(str(tmp_path / "enc"), device="cpu", truncate_dim=dim)
    np.testing.assert_allclose(
        st.encode(SENTENCES, normalize_embeddings=True),
        enc.encode(SENTENCES, dimensions=dim, normalize=True),
        atol=1e-5,
    )
    np.testing.assert_array_equal(
        st.encode(SENTENCES, precision="ubinary"), enc.encode(SENTENCES, dimensions=dim, precision="ubinary")
    )


def test_finish_applies_the_steps_in_order(floats):
    ranges = calibration_ranges(floats, 12, True)
    spec = OutputSpec(12, True, "int8", ranges)
    np.testing.assert_array_equal(
        finish(floats, spec), quantize_embeddings(truncate_normalize(floats, 12, True), "int8", ranges=ranges)
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [("all-nan", "dimension 0 has a non-finite range"), ("inf", "dimension 5 has a non-finite range"),
     ("invert", "dimension 3 has min"), ("shape", r"must have shape \(2, 32\)")],
)  # fmt: skip
def test_bad_int8_ranges_are_refused_where_they_enter(floats, encoder, damage, message):
    """NaN ranges quantized to zeros (with only numpy's cast warning) and inverted ones to reversed codes;
    both are refused in quantize, in OutputSpec (before encoding) and in encode(ranges=)."""
    from decoder2vec.errors import InputError

    ranges = np.vstack([floats.min(0), floats.max(0)]).astype(np.float32)[:, :32]
    if damage == "all-nan":
        ranges[:] = np.nan
    elif damage == "inf":
        ranges[1, 5] = np.inf
    elif damage == "invert":
        ranges[:, 3] = ranges[::-1, 3]
    else:
        ranges = ranges[:, :31]
    with pytest.raises(InputError, match=message):
        quantize(floats[:, :32], "int8", ranges)
    with pytest.raises(InputError, match=message):
        encoder.encode(SENTENCES, precision="int8", ranges=ranges)
    if damage != "shape":
        with pytest.raises(InputError, match=message):
            OutputSpec(precision="uint8", ranges=ranges)


def test_a_calibration_sample_with_nan_is_refused(encoder, tmp_path):
    from decoder2vec.errors import InputError

    sample = encoder.encode(SENTENCES * 2)
    sample[1, 4] = np.nan
    with pytest.raises(ValueError, match="calibration sample.*row 1"):
        encoder.calibration = sample
    encoder.calibrate(SENTENCES * 3)
    folder = encoder.save(tmp_path / "enc")
    bad = np.load(folder / "decoder2vec_calibration.npy")
    bad[0, 0] = np.nan
    np.save(folder / "decoder2vec_calibration.npy", bad)
    with pytest.raises(InputError, match="decoder2vec_calibration.npy.*row 0"):
        type(encoder).from_pretrained(folder)
