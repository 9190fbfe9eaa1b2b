"""``decoder2vec export static``: a static model distilled from an encoder, in model2vec's format.

Independent references: model2vec's ``StaticModel`` and sentence-transformers' ``StaticEmbedding`` (they load
the folder), the encoder's own ``encode`` of each token's text, sklearn's PCA, and a numpy mean of the rows
read back from ``model.safetensors``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from decoder2vec import Encoder
from decoder2vec.cli import app
from decoder2vec.encoding.static import StaticEncoder
from decoder2vec.errors import InputError, ModelLoadError, SettingError
from decoder2vec.export import static as static_export
from decoder2vec.export.static import StaticSettings, export_static, pca_fit, pca_transform, token_vectors

TEXTS = [
    "the cat sat on the mat",
    "A quick brown fox jumps over the lazy dog.",
    "hi",
    "Numbers like 12345 and 3.14 -- don't they matter?",
    "Ünïcödé, emoji 🙂 and\ttabs\nnewlines",
    " ".join(f"Paragraph {i}: the river city grew around its port, trading grain." for i in range(60)),
]


@pytest.fixture(scope="module")
def teacher_folder(tiny_model_factory) -> Path:
    """A tiny random Llama whose byte-level BPE tokenizer adds a BOS: the static rows must come from
    ``[BOS] token`` sequences, as the encoder sees a one-token text."""
    return tiny_model_factory("llama", add_bos=True, tokenizer="gpt2")


@pytest.fixture(scope="module")
def static_folder(teacher_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("static") / "model"
    encoder = Encoder.from_pretrained(str(teacher_folder))
    export_static(
        encoder, out, StaticSettings(dims=16, method="distill"), model_name=str(teacher_folder), log=print
    )
    return out


def round_trip_tokens(tokenizer, limit: int = 40) -> list[int]:
    """Token ids whose decoded text tokenizes back to exactly that one id (so ``encode(text)`` embeds it)."""
    ids = []
    for t in range(len(tokenizer)):
        text = tokenizer.decode([t])
        if text.strip() and tokenizer(text, add_special_tokens=False)["input_ids"] == [t]:
            ids.append(t)
        if len(ids) == limit:
            break
    return ids


@pytest.mark.parametrize(
    ("pooling", "append_eos", "instruction"),
    [("mean", False, None), ("last_token", True, None), ("mean", False, "Retrieve similar text:")],
)
def test_token_rows_are_the_encoders_embedding_of_each_token(
    teacher_folder, pooling, append_eos, instruction
):
    encoder = Encoder.from_pretrained(str(teacher_folder), pooling=pooling, append_eos=append_eos)
    rows = token_vectors(encoder, len(encoder.tokenizer), instruction=instruction, log=lambda _: None)
    ids = round_trip_tokens(encoder.tokenizer)
    texts = [encoder.tokenizer.decode([t]) for t in ids]
    expected = encoder.encode(texts, instruction=instruction)
    np.testing.assert_allclose(rows[ids], expected, rtol=1e-4, atol=1e-5)


def test_model2vec_and_sentence_transformers_load_it_and_agree_with_encode(static_folder):
    from model2vec import StaticModel
    from sentence_transformers import SentenceTransformer

    ours = Encoder.from_pretrained(str(static_folder))
    assert isinstance(ours, StaticEncoder)
    mine = ours.encode(TEXTS, normalize=True)
    m2v = StaticModel.from_pretrained(static_folder).encode(TEXTS)
    st = SentenceTransformer(str(static_folder), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(mine, m2v, atol=1e-5)  # float32 sums in another order
    np.testing.assert_allclose(mine, st, atol=1e-5)


def test_encode_is_the_mean_of_the_saved_rows(static_folder):
    """numpy brute force from the files: rows of the text's tokens (no special tokens), averaged."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    table = load_file(str(static_folder / "model.safetensors"))["embeddings"]
    tokenizer = Tokenizer.from_file(str(static_folder / "tokenizer.json"))
    expected = np.stack([table[tokenizer.encode(t, add_special_tokens=False).ids].mean(0) for t in TEXTS])
    encoder = Encoder.from_pretrained(str(static_folder))
    np.testing.assert_allclose(encoder.encode(TEXTS), expected, rtol=1e-5, atol=1e-6)
    # the output step is every encoder's: truncate, then normalize, then quantize
    cut = expected[:, :8] / np.linalg.norm(expected[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(encoder.encode(TEXTS, dimensions=8, normalize=True), cut, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        encoder.encode(TEXTS, precision="ubinary"), np.packbits(expected > 0, axis=-1)
    )


def test_encode_contract(static_folder):
    encoder = Encoder.from_pretrained(str(static_folder))
    assert encoder.encode([]).shape == (0, 16)
    assert encoder.encode("hi").shape == (16,)
    assert encoder.encode(["hi"], convert_to="torch").shape == (1, 16)
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        encoder.encode(["hi", "  "])
    with pytest.raises(ValueError, match="outside"):
        encoder.encode(["hi"], dimensions=17)
    with pytest.raises(InputError, match="distilled without an instruction"):
        encoder.encode(["hi"], instruction="Retrieve: ")
    with pytest.raises(InputError, match="late chunking"):
        encoder.encode_chunks(["a document"])
    with pytest.raises(ModelLoadError, match="static model"):
        Encoder.from_pretrained(str(static_folder), pooling="last_token")


def test_pca_matches_sklearn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
    mean, components = pca_fit(x, 5)
    ours = pca_transform(x, mean, components)
    theirs = PCA(n_components=5, svd_solver="full").fit_transform(x)
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), rtol=1e-4, atol=1e-4)
    signs = np.sign(ours[np.abs(ours).argmax(0), range(5)])
    assert (signs > 0).all()  # the deterministic sign: each axis's largest projection is positive


def test_an_interrupted_vocabulary_pass_resumes(teacher_folder, tmp_path, monkeypatch):
    encoder = Encoder.from_pretrained(str(teacher_folder))
    monkeypatch.setattr(static_export, "CHUNK_TOKENS", 100)
    work = tmp_path / "work"
    full = token_vectors(encoder, 250, work=work, log=lambda _: None)
    marked = np.full((100, encoder.embedding_dim), 7.0, dtype=np.float32)
    np.save(work / "tokens-000100-000200.npy", marked)  # a finished piece is read back, not recomputed
    resumed = token_vectors(encoder, 250, work=work, log=lambda _: None)
    np.testing.assert_array_equal(resumed[100:200], marked)
    np.testing.assert_array_equal(resumed[:100], full[:100])


def test_tokenlearn_training_fits_its_targets_better_than_the_start():
    rng = np.random.default_rng(0)
    vocab, width = 60, 8
    truth = rng.normal(size=(vocab, width)).astype(np.float32)
    ids = [list(rng.integers(0, vocab, size=rng.integers(3, 12))) for _ in range(600)]
    targets = np.stack([truth[row].mean(0) for row in ids])
    start = rng.normal(size=(vocab, width)).astype(np.float32)
    trained = static_export.tokenlearn_train(
        start, ids, targets, epochs=30, learning_rate=3e-2, batch_size=64, log=lambda _: None
    )

    def fit(table):  # held-out R^2 of the best linear read-out of plain means (what model2vec computes)
        means = np.stack([table[row].mean(0) for row in ids])
        x = np.hstack([means, np.ones((len(means), 1))])
        coef = np.linalg.lstsq(x[:500], targets[:500], rcond=None)[0]
        residual = targets[500:] - x[500:] @ coef
        return 1 - (residual**2).sum() / ((targets[500:] - targets[500:].mean(0)) ** 2).sum()

    assert fit(trained) > 0.9 > fit(start)


# ------------------------------------------------------------------ the command
runner = CliRunner()


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the flags were checked")

    monkeypatch.setattr(Encoder, "from_pretrained", refuse)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "magic"], "--method must be one of"),
        (["--dims", "1"], "--dims must be an integer >= 2"),
        (["--sif", "2"], "--sif must be in"),
        (["--instruction", "  "], "--instruction is empty"),
    ],
)
def test_bad_flags_fail_before_loading(no_model_load, tmp_path, flags, message):
    result = runner.invoke(app, ["export", "static", "smollm2-135m-llm2vec", str(tmp_path / "out"), *flags])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_an_existing_out_is_never_overwritten(no_model_load, tmp_path, static_folder):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["export", "static", "smollm2-135m-llm2vec", str(user)])
    assert result.exit_code == 1 and "holds no static model written by decoder2vec" in result.output
    assert (user / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = runner.invoke(app, ["export", "static", "smollm2-135m-llm2vec", str(a_file)])
    assert result.exit_code == 1 and "is not a folder" in result.output
    result = runner.invoke(app, ["export", "static", "smollm2-135m-llm2vec", str(static_folder)])
    assert result.exit_code == 1 and "pass --overwrite" in result.output


def test_not_an_encoder_is_a_clear_error(tmp_path, static_folder):
    result = runner.invoke(app, ["export", "static", str(static_folder), str(tmp_path / "out")])
    assert result.exit_code == 1 and "it is already static" in result.output
    result = runner.invoke(app, ["export", "static", str(tmp_path / "nothing"), str(tmp_path / "out")])
    assert result.exit_code == 1 and "no such model folder" in result.output
    assert not (tmp_path / "out").exists()


def test_command_writes_a_loadable_model_and_overwrites_only_its_own(teacher_folder, tmp_path):
    out = tmp_path / "static"
    args = ["export", "static", str(teacher_folder), str(out), "--method", "distill", "--dims", "8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "decoder2vec_static.json").read_text())
    assert meta["method"] == "distill" and meta["dims"] == 8
    assert Encoder.from_pretrained(str(out)).encode("hi").shape == (8,)
    assert not list(tmp_path.glob(".static.static-work-*"))  # the resumable pieces are gone once done
    result = runner.invoke(app, [*args, "--dims", "4", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert Encoder.from_pretrained(str(out)).encode("hi").shape == (4,)


# ------------------------------------------------------------------ served and embedded like any encoder
def test_the_server_serves_a_static_model_as_encode_does(static_folder):
    import httpx

    from decoder2vec.serving import ServeSettings, create_app
    from decoder2vec.serving.worker import load_checked_encoder
    from tests.serving.conftest import running_server, wait_ready

    encoder = Encoder.from_pretrained(str(static_folder))
    texts = TEXTS[:4]
    app_ = create_app(ServeSettings(model=str(static_folder)), loader=load_checked_encoder)
    with running_server(app_) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        body = client.post("/v1/embeddings", json={"input": texts}).json()
        served = np.array([row["embedding"] for row in body["data"]])
        np.testing.assert_allclose(served, encoder.encode(texts), rtol=1e-5, atol=1e-6)
        ids = encoder.token_ids(texts[:1])
        body = client.post("/v1/embeddings", json={"input": ids}).json()
        np.testing.assert_allclose(
            body["data"][0]["embedding"], encoder.encode(texts[0]), rtol=1e-5, atol=1e-6
        )
        refused = client.post("/v1/embeddings", json={"input": texts, "instruction": "Retrieve: "})
        assert refused.status_code in (400, 422)
        assert "distilled without an instruction" in refused.text and "instruction" in refused.text


def test_embed_corpus_writes_a_static_models_encode(static_folder, tmp_path):
    from decoder2vec.corpus import read_shards

    texts = [f"{t} ({i})" for i, t in enumerate(TEXTS * 5)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "out"
    result = runner.invoke(app, ["embed-corpus", str(corpus), "-o", str(out), "-m", str(static_folder)])
    assert result.exit_code == 0, result.output
    ids, rows = read_shards(out)
    assert ids == [str(i) for i in range(len(texts))]
    np.testing.assert_allclose(rows, Encoder.from_pretrained(str(static_folder)).encode(texts), atol=1e-6)
    refused = runner.invoke(
        app,
        [
            "embed-corpus",
            str(corpus),
            "-o",
            str(tmp_path / "o2"),
            "-m",
            str(static_folder),
            "--pooling",
            "bos",
        ],
    )
    assert refused.exit_code == 1 and "does not apply" in refused.output


def test_gguf_export_of_a_static_model_is_refused_by_name(static_folder, tmp_path):
    result = runner.invoke(app, ["export", "gguf", "-m", str(static_folder), "-o", str(tmp_path / "x.gguf")])
    assert result.exit_code == 1 and "is a static model" in result.output and "GGUF" in result.output


def test_tokenlearn_export_trains_on_the_encoders_embeddings_of_the_corpus(
    teacher_folder, tmp_path, monkeypatch
):
    from tests.conftest import SENTENCES

    corpus = [f"{a} {b}" for a in SENTENCES for b in SENTENCES]
    monkeypatch.setattr(static_export, "corpus_texts", lambda limit, seed=0: corpus[:limit])
    encoder = Encoder.from_pretrained(str(teacher_folder))
    settings = StaticSettings(dims=8, method="tokenlearn", corpus_texts=100, epochs=2)
    out = export_static(
        encoder, tmp_path / "tl", settings, model_name=str(teacher_folder), log=lambda _: None
    )
    meta = json.loads((out / "decoder2vec_static.json").read_text())
    assert meta["method"] == "tokenlearn" and meta["corpus_texts"] == len(corpus[:100])
    assert 0 < meta["tokens_seen_in_context"] < len(encoder.tokenizer)
    distilled = export_static(
        encoder, tmp_path / "d", StaticSettings(dims=8), model_name=str(teacher_folder), log=lambda _: None
    )
    # the trained table is not the distilled one it started from, and it still loads everywhere
    a = Encoder.from_pretrained(str(out)).encode(corpus[:5])
    b = Encoder.from_pretrained(str(distilled)).encode(corpus[:5])
    assert not np.allclose(a, b)


@pytest.mark.parametrize("add_bos", [False, True])
def test_corpus_features_are_encode_and_its_token_states(tiny_model_factory, add_bos):
    """targets == encode; with mean pooling and no BOS in the pool, an embedding is the mean of the states the
    per-token sums add up (so sum(sums) / sum(counts) over one text's tokens gives it back)."""
    folder = tiny_model_factory("llama", add_bos=add_bos, tokenizer="gpt2")
    encoder = Encoder.from_pretrained(str(folder))
    size = len(encoder.tokenizer)
    targets, sums, counts = static_export.corpus_features(encoder, TEXTS[:4], size, log=lambda _: None)
    np.testing.assert_allclose(targets, encoder.encode(TEXTS[:4]), rtol=1e-4, atol=1e-5)
    text = "the river city grew"
    _, sums, counts = static_export.corpus_features(encoder, [text], size, log=lambda _: None)
    assert counts.sum() == len(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])
    if not add_bos:
        np.testing.assert_allclose(sums.sum(0) / counts.sum(), encoder.encode(text), rtol=1e-4, atol=1e-5)
    else:  # uninstructed mean pooling also pools the BOS state, which no static row stands for
        batch = encoder.tokenize([text])
        states = encoder.token_states(batch)[0].numpy()
        np.testing.assert_allclose(sums.sum(0), states[1:].sum(0), rtol=1e-4, atol=1e-4)


def test_context_needs_mean_pooling(teacher_folder, tmp_path):
    encoder = Encoder.from_pretrained(str(teacher_folder), pooling="last_token")
    with pytest.raises(SettingError, match="--method context needs mean pooling"):
        export_static(encoder, tmp_path / "x", StaticSettings(method="context"), model_name="m", log=print)
    assert not list(tmp_path.iterdir())
