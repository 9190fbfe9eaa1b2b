"""The embedding server over real HTTP (uvicorn on a loopback port), called with the openai client."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from decoder2vec.serving import ServeSettings, create_app
from decoder2vec.serving.app import default_loader
from decoder2vec.serving.worker import InProcessModel
from tests.conftest import SENTENCES
from tests.serving.conftest import API_KEY, running_server, wait_ready


def client_for(url: str, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def metric_values(url: str) -> dict[tuple, float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# Without encoding_format the client asks for base64 and decodes it itself (little-endian float32).
@pytest.mark.parametrize("options", [{"encoding_format": "float"}, {}], ids=["float", "base64"])
def test_openai_client_gets_encode_embeddings(server, encoder, options):
    expected = encoder.encode(SENTENCES)
    result = client_for(server).embeddings.create(input=SENTENCES, model="tiny-llama", **options)
    assert [d.index for d in result.data] == list(range(len(SENTENCES)))
    np.testing.assert_allclose(np.array([d.embedding for d in result.data]), expected, atol=1e-5)
    assert result.model == "tiny-llama" and result.object == "list"
    tokens = sum(len(s.ids) for s in encoder.builder.build(SENTENCES))
    assert result.usage.prompt_tokens == result.usage.total_tokens == tokens


def test_base64_is_little_endian_float32_and_single_string(server, encoder):
    body = {"input": SENTENCES[0], "encoding_format": "base64", "dimensions": encoder.embedding_dim}
    response = httpx.post(
        f"{server}/v1/embeddings", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 200
    vector = np.frombuffer(base64.b64decode(response.json()["data"][0]["embedding"]), dtype="<f4")
    # OpenAI semantics: with `dimensions` the vector is (truncated and) normalized
    np.testing.assert_allclose(vector, encoder.encode(SENTENCES[0], normalize=True), atol=1e-5)


def test_instruction_and_token_ids(server, encoder):
    client = client_for(server)
    instruction = "Retrieve passages: "
    result = client.embeddings.create(input=SENTENCES[:3], model="m", extra_body={"instruction": instruction})
    expected = encoder.encode(SENTENCES[:3], instruction=instruction)
    np.testing.assert_allclose(np.array([d.embedding for d in result.data]), expected, atol=1e-5)
    # Token ids are the text's ids without special tokens; BOS is added as for a text.
    ids = encoder.builder.token_ids(SENTENCES[:2])
    result = client.embeddings.create(input=ids, model="m")
    np.testing.assert_allclose(
        np.array([d.embedding for d in result.data]), encoder.encode(SENTENCES[:2]), atol=1e-5
    )
    single = client.embeddings.create(input=ids[0], model="m", encoding_format="float")
    np.testing.assert_allclose(single.data[0].embedding, encoder.encode(SENTENCES[0]), atol=1e-5)


def test_64_concurrent_clients_get_their_own_rows(server, encoder):
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "theta",
        "kappa",
        "lambda",
        "sigma",
        "omega",
    ]
    requests = [
        [f"{words[i % 11]} {i} " * (1 + i % 7) + s for s in SENTENCES[: 1 + i % 4]] for i in range(64)
    ]
    expected = [encoder.encode(texts) for texts in requests]

    async def run() -> list:
        client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=60)
        try:
            calls = [client.embeddings.create(input=t, model="m", encoding_format="float") for t in requests]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.close()

    before = metric_values(server)
    results = asyncio.run(run())
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    for result, want in zip(results, expected):
        np.testing.assert_allclose(np.array([d.embedding for d in result.data]), want, atol=1e-5)
    after = metric_values(server)
    batches = ("decoder2vec_batch_texts_count", ())
    # Concurrent requests were merged: fewer forwards than requests.
    assert after[batches] - before.get(batches, 0) < 64


def post(url: str, body, key: str | None = API_KEY, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, (bytes, str)):
        return httpx.post(f"{url}/v1/embeddings", content=body, headers=headers, **kwargs)
    return httpx.post(f"{url}/v1/embeddings", json=body, headers=headers, **kwargs)


LONG = "the " * 400  # ~800 tokens, over the tiny model's 512


@pytest.mark.parametrize(
    ("body", "key", "status", "message"),
    [
        ({"input": "hi"}, None, 401, "API key"),
        ({"input": "hi"}, "wrong", 401, "API key"),
        (b"{not json", API_KEY, 422, "not valid JSON"),
        ({"model": "m"}, API_KEY, 422, "input"),
        ({"input": ""}, API_KEY, 422, "input[0] is empty"),
        ({"input": ["ok", "   "]}, API_KEY, 422, "input[1] is empty or whitespace-only"),
        ({"input": ["ok", 3]}, API_KEY, 422, "input[1] is a int"),
        ({"input": [1, "2"]}, API_KEY, 422, "input[1] is a string"),
        ({"input": [[1, 2], []]}, API_KEY, 422, "input[1] is an empty list"),
        # JSON escapes can carry lone surrogates, which no tokenizer encodes.
        (b'{"input": ["fine", "bad \\ud800 text"]}', API_KEY, 422, "input[1]: broken Unicode"),
        (b'{"input": "fine", "instruction": "\\udfff: "}', API_KEY, 422, "instruction: broken Unicode"),
        ({"input": [10**9]}, API_KEY, 422, "outside"),
        ({"input": []}, API_KEY, 422, "empty list"),
        ({"input": "hi", "encoding_format": "int8"}, API_KEY, 422, "encoding_format"),
        ({"input": LONG, "truncate": False}, API_KEY, 422, "longer than the maximum"),
        ({"input": "hi", "dimensions": 64}, API_KEY, 422, "dimensions=64 is outside [1, 32]"),
        ({"input": ["x"] * 17}, API_KEY, 413, "17 inputs exceed the maximum of 16"),
        ({"input": "x" * 30_000}, API_KEY, 413, "exceeds 20000 bytes"),
    ],
)
def test_errors_have_the_openai_shape(server, body, key, status, message):
    response = post(server, body, key)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and set(error) == {"message", "type", "param", "code"}


def test_truncation_is_on_by_default_and_usage_counts_embedded_tokens(server, encoder):
    response = post(server, {"input": [LONG, "hi"]})
    assert response.status_code == 200
    sequences = encoder.builder.build([LONG, "hi"])
    assert sequences[0].truncated and response.json()["usage"]["prompt_tokens"] == sum(
        len(s.ids) for s in sequences
    )
    np.testing.assert_allclose(response.json()["data"][0]["embedding"], encoder.encode(LONG), atol=1e-5)


def test_openai_client_raises_on_a_wrong_key_and_models_lists_the_model(server):
    with pytest.raises(openai.AuthenticationError):
        client_for(server, key="nope").embeddings.create(input="hi", model="m")
    assert [m.id for m in client_for(server).models.list()] == ["tiny-llama"]
    assert httpx.get(f"{server}/v1/models").status_code == 401
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}


def test_metrics_count_what_was_sent(server):
    before = metric_values(server)
    statuses = []
    tokens = 0
    for body in ({"input": ["one two", "three"]}, {"input": "four"}, {"input": ""}, {"input": ["x"] * 17}):
        response = post(server, body)
        statuses.append(response.status_code)
        if response.status_code == 200:
            tokens += response.json()["usage"]["prompt_tokens"]
    post(server, {"input": "hi"}, key=None)
    after = metric_values(server)

    def delta(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert statuses == [200, 200, 422, 413]
    assert delta("decoder2vec_requests_total", endpoint="/v1/embeddings", status="200") == 2
    assert delta("decoder2vec_requests_total", endpoint="/v1/embeddings", status="422") == 1
    assert delta("decoder2vec_requests_total", endpoint="/v1/embeddings", status="413") == 1
    assert delta("decoder2vec_requests_total", endpoint="/v1/embeddings", status="401") == 1
    assert delta("decoder2vec_embedded_tokens_total") == tokens
    assert delta("decoder2vec_embedded_texts_total") == 3
    assert delta("decoder2vec_request_duration_seconds_count", endpoint="/v1/embeddings") == 5
    assert after[("decoder2vec_queue_depth", ())] == 0


def test_health_is_503_while_loading_then_the_model_process_serves(tiny_llama, encoder):
    release = threading.Event()

    def slow_loader(settings):
        release.wait(30)
        return default_loader(settings)  # the real loader: the model in a child process

    app = create_app(ServeSettings(model=str(tiny_llama), model_process=True), loader=slow_loader)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/health").status_code == 503
        response = client.post("/v1/embeddings", json={"input": "hi"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "model_not_ready"
        release.set()
        wait_ready(client)
        response = client.post("/v1/embeddings", json={"input": SENTENCES, "instruction": "Query: "})
        assert response.status_code == 200
        rows = np.array([d["embedding"] for d in response.json()["data"]])
        np.testing.assert_allclose(rows, encoder.encode(SENTENCES, instruction="Query: "), atol=1e-5)


def test_queue_full_is_429_and_a_departed_client_costs_no_forward(encoder):
    gate = threading.Event()
    embedded: list[int] = []

    class Gated:
        """The real encoder, with a forward that waits for the test to open the gate."""

        def __getattr__(self, name):
            return getattr(encoder, name)

        def forward_sequences(self, sequences):
            gate.wait(30)
            embedded.append(len(sequences))
            return encoder.forward_sequences(sequences)

    settings = ServeSettings(model="m", max_client_batch_size=4, max_queue=4)
    with (
        running_server(create_app(settings, loader=lambda s: InProcessModel(Gated(), s))) as url,
        httpx.Client(base_url=url) as client,
    ):
        wait_ready(client)
        first: list[httpx.Response] = []
        worker = threading.Thread(
            target=lambda: first.append(client.post("/v1/embeddings", json={"input": ["a", "b", "c"]}))
        )
        worker.start()
        while metric_values(url)[("decoder2vec_queue_depth", ())] < 3:
            time.sleep(0.01)
        # 3 of 4 texts are held: two more do not fit, one does.
        full = client.post("/v1/embeddings", json={"input": ["d", "e"]})
        assert full.status_code == 429 and full.json()["error"]["type"] == "rate_limit_error"
        # This client gives up while its text waits behind the gated forward.
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/embeddings", json={"input": "left early"}, timeout=0.5)
        departed = ("decoder2vec_requests_total", (("endpoint", "/v1/embeddings"), ("status", "499")))
        while metric_values(url).get(departed, 0) < 1:  # the server has seen the disconnect
            time.sleep(0.01)
        gate.set()
        worker.join(30)
        assert first[0].status_code == 200 and len(first[0].json()["data"]) == 3
        time.sleep(0.2)
        assert embedded == [3]  # the departed client's text never reached the model
        assert metric_values(url)[("decoder2vec_skipped_texts_total", ())] == 1


def test_deeply_nested_json_is_a_422_not_a_500(server):
    deep = 9000  # past the JSON parser's recursion limit, within the 20000-byte payload limit
    for body in (b"[" * deep + b"]" * deep, b'{"input": "hi", "user": ' + b"[" * deep + b"]" * deep + b"}"):
        response = post(server, body)
        assert response.status_code == 422, response.text
        message = response.json()["error"]["message"]
        assert "too deeply" in message and "internal" not in message and "Traceback" not in message


@pytest.mark.parametrize("sent", [b"", b'{"input": ["a stalled'], ids=["no-body", "part-of-the-body"])
def test_a_stalled_body_is_answered_408_within_the_timeout(encoder, sent):
    """A client that sends headers with Content-Length, then (part of) no body, does not hold the
    connection: the server answers 408 once --body-timeout has passed."""
    import socket
    from urllib.parse import urlsplit

    settings = ServeSettings(model="m", body_timeout=1.0)
    with running_server(create_app(settings, loader=lambda s: encoder)) as url:
        with httpx.Client(base_url=url) as client:
            wait_ready(client)
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            head = (
                "POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n"
            )
            sock.sendall(head.encode() + sent)
            start = time.monotonic()
            received = b""
            while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)  # raises socket.timeout (a failure) if nothing comes in 10 s
                if not chunk:
                    break
                received += chunk
            waited = time.monotonic() - start
    assert received.startswith(b"HTTP/1.1 408"), received
    assert b"did not arrive within 1 s" in received and b'"code":"body_timeout"' in received
    assert 0.8 < waited < 5


@pytest.mark.parametrize("implementation", ["httptools", "h11"])
@pytest.mark.parametrize(
    "sent", [b"", b"POST /v1/embeddings HTTP/1.1\r\nHost: local"], ids=["nothing", "dribbled"]
)
def test_a_client_whose_headers_never_finish_is_cut_off(encoder, implementation, sent):
    """uvicorn times nothing while headers arrive, and the app only sees complete headers: a client that
    sends nothing, or a header byte now and then, held its connection for good (>= 45 s). The protocol
    `serve` runs closes it once --body-timeout has passed since the connection opened; a raw socket to
    127.0.0.1 shows the close (recv returns b"")."""
    import importlib
    import socket
    from urllib.parse import urlsplit

    from decoder2vec.serving.connections import header_deadline_protocol

    module = importlib.import_module(f"uvicorn.protocols.http.{implementation}_impl")
    base = module.HttpToolsProtocol if implementation == "httptools" else module.H11Protocol
    settings = ServeSettings(model="m", body_timeout=1.0)
    app = create_app(settings, loader=lambda s: encoder)
    with running_server(app, http=header_deadline_protocol(1.0, base)) as url:
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            start = time.monotonic()
            sock.sendall(sent)
            sock.settimeout(0.3)
            closed = False
            while time.monotonic() - start < 8 and not closed:
                try:
                    closed = sock.recv(1024) == b""
                except TimeoutError:
                    if sent:
                        try:
                            sock.sendall(b"h")  # one more header byte: a slow client, not a silent one
                        except OSError:
                            closed = True
                except OSError:
                    closed = True
            waited = time.monotonic() - start
        assert closed and 0.8 < waited < 4, (closed, waited)
        with httpx.Client(base_url=url) as client:  # and the server serves the next client as usual
            wait_ready(client)
            assert client.post("/v1/embeddings", json={"input": "hi"}).status_code == 200


def test_the_schema_needs_the_key_when_one_is_set_and_there_are_no_browsable_docs(server, encoder):
    """/openapi.json described every endpoint to anyone; with --api-key it answers 401 like the API."""
    from tests.serving.conftest import API_KEY

    assert httpx.get(f"{server}/openapi.json").status_code == 401
    assert httpx.get(f"{server}/openapi.json", headers={"Authorization": "Bearer nope"}).status_code == 401
    schema = httpx.get(f"{server}/openapi.json", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert "/v1/embeddings" in schema["paths"] and "/openapi.json" not in schema["paths"]
    for path in ("/docs", "/redoc"):
        assert httpx.get(f"{server}{path}").status_code == 404
    with running_server(create_app(ServeSettings(model="m"), loader=lambda s: encoder)) as url:
        assert httpx.get(f"{url}/openapi.json").status_code == 200  # no key set: open, as the API is
