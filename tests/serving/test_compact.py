"""`dimensions` and `embedding_types` over real HTTP, read with the official openai client and httpx."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from decoder2vec import Encoder
from decoder2vec.serving import ServeSettings, create_app
from tests.conftest import SENTENCES
from tests.serving.conftest import running_server, wait_ready


@pytest.fixture(scope="module")
def calibrated(tiny_llama) -> Encoder:
    encoder = Encoder.from_pretrained(tiny_llama)
    encoder.matryoshka_dimensions = [32, 16, 8]
    encoder.calibrate(SENTENCES * 3)
    return encoder


@pytest.fixture(scope="module")
def url(calibrated):
    with running_server(create_app(ServeSettings(model="m"), loader=lambda s: calibrated)) as url:
        with httpx.Client(base_url=url) as client:
            wait_ready(client)
        yield url


# Without encoding_format the client asks for base64 and decodes it itself.
@pytest.mark.parametrize("options", [{"encoding_format": "float"}, {}], ids=["float", "base64"])
def test_openai_client_gets_truncated_renormalized_vectors(url, calibrated, options):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    result = client.embeddings.create(input=SENTENCES, model="m", dimensions=16, **options)
    got = np.array([d.embedding for d in result.data])
    assert got.shape == (len(SENTENCES), 16)
    np.testing.assert_allclose(got, calibrated.encode(SENTENCES, dimensions=16, normalize=True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_embedding_types_give_each_precision(url, calibrated):
    body = {"input": SENTENCES, "dimensions": 8, "embedding_types": ["int8", "ubinary", "float"]}
    data = httpx.post(f"{url}/v1/embeddings", json=body).json()["data"]
    for kind, precision in [("int8", "int8"), ("ubinary", "ubinary"), ("float", "float32")]:
        got = np.array([item["embeddings"][kind] for item in data])
        expected = calibrated.encode(SENTENCES, dimensions=8, normalize=True, precision=precision)
        # int8: the server batches texts its own way, and float noise of ~1e-7 at a bucket edge moves a code
        # by one step (seen on AMX-capable CPUs: 126 vs 127 at the range's top); floats agree to 1e-5
        np.testing.assert_allclose(got, expected, atol=1 if kind == "int8" else 1e-5)
    assert [item["embedding"] for item in data] == [item["embeddings"]["int8"] for item in data]


def test_base64_int8_is_one_byte_per_value(url, calibrated):
    body = {"input": SENTENCES[0], "embedding_types": ["binary"], "encoding_format": "base64"}
    item = httpx.post(f"{url}/v1/embeddings", json=body).json()["data"][0]
    got = np.frombuffer(base64.b64decode(item["embedding"]), dtype=np.int8)
    np.testing.assert_array_equal(got, calibrated.encode(SENTENCES[0], precision="binary"))


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"dimensions": 0}, "dimensions"),
        ({"dimensions": -1}, "dimensions"),
        ({"dimensions": 33}, "dimensions"),
        ({"embedding_types": ["int4"]}, "embedding_types"),
    ],
)
def test_bad_dimensions_and_types_are_422_naming_the_field(url, extra, param):
    response = httpx.post(f"{url}/v1/embeddings", json={"input": "hello", **extra})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == param


def test_not_an_integer_is_422(url):
    response = httpx.post(f"{url}/v1/embeddings", json={"input": "hello", "dimensions": 1.5})
    assert response.status_code == 422 and "dimensions" in response.json()["error"]["message"]


def test_models_lists_the_trained_dimensions(url):
    card = httpx.get(f"{url}/v1/models").json()["data"][0]
    assert card["dimensions"] == 32 and card["matryoshka_dimensions"] == [32, 16, 8]
    assert set(card["embedding_types"]) == {"float", "int8", "uint8", "binary", "ubinary"}


def test_int8_without_calibration_is_422_saying_what_to_do(tiny_llama):
    plain = Encoder.from_pretrained(tiny_llama)
    app = create_app(ServeSettings(model="m"), loader=lambda s: plain)
    with running_server(app) as url, httpx.Client(base_url=url) as client:
        wait_ready(client)
        response = client.post("/v1/embeddings", json={"input": "hi", "embedding_types": ["uint8"]})
        assert response.status_code == 422 and "calibrat" in response.json()["error"]["message"]
        assert client.get("/v1/models").json()["data"][0]["matryoshka_dimensions"] is None
