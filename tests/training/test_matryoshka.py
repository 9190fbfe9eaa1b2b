"""Matryoshka training: GradCache still gives the full-batch gradient, and the trained dimensions travel
with the encoder (decoder2vec config, config.json for vLLM)."""

import json

import pytest
import torch

from decoder2vec.encoding.tokenization import tokenize_batch
from decoder2vec.errors import ConfigError
from decoder2vec.training import run_simcse
from decoder2vec.training.config import SimCSEConfig
from decoder2vec.training.gradcache import grad_cache_step, split_batch
from decoder2vec.training.losses import matryoshka_loss, simcse_loss
from decoder2vec.training.modules import embed

from .conftest import SENTENCES
from .test_gradcache import grads, make_embedder


def simcse_config(model, corpus, **settings) -> SimCSEConfig:
    """A SimCSE stage on the tiny model and corpus: batch 4, ``settings`` on top."""
    return SimCSEConfig(model=str(model), data=str(corpus), batch_size=4, **settings)


def test_gradcache_with_matryoshka_equals_full_batch(tiny_tokenizer):
    model = make_embedder(tiny_tokenizer, dropout=0.0)
    a = tokenize_batch(tiny_tokenizer, SENTENCES[:6], max_length=32)
    b = tokenize_batch(tiny_tokenizer, SENTENCES[6:12], max_length=32)
    dev = torch.device("cpu")

    def loss_fn(x, y):
        return matryoshka_loss(lambda p, q: simcse_loss(p, q, 0.05), (x, y), [32, 16, 4])

    full = loss_fn(embed(model, a, dev), embed(model, b, dev))
    full.backward()
    reference = grads(model)
    model.zero_grad()
    cached = grad_cache_step(
        lambda batch: embed(model, batch, dev), [split_batch(x, 2) for x in (a, b)], loss_fn
    )
    assert torch.allclose(cached, full.detach(), atol=1e-6)
    got = grads(model)
    assert reference.keys() == got.keys() and got
    for key in reference:
        assert torch.allclose(got[key], reference[key], atol=1e-5, rtol=1e-4), key


def test_simcse_records_matryoshka_dimensions(tiny_word_llama, text_corpus, tmp_path):
    cfg = simcse_config(
        tiny_word_llama,
        text_corpus,
        max_steps=2,
        max_seq_length=16,
        learning_rate=1e-2,
        matryoshka_dims=[16, 32, 8],
    )
    result = run_simcse(cfg, tmp_path / "run")
    config = json.loads((result.merged / "config.json").read_text())
    assert config["matryoshka_dimensions"] == [32, 16, 8]
    assert json.loads((result.merged / "decoder2vec_config.json").read_text())["matryoshka_dimensions"] == [
        32,
        16,
        8,
    ]


def test_matryoshka_dimension_wider_than_the_model_is_refused(tiny_word_llama, text_corpus, tmp_path):
    cfg = simcse_config(tiny_word_llama, text_corpus, max_steps=2, matryoshka_dims=[64, 8])
    with pytest.raises(ConfigError, match=r"\[1, 32\]"):
        run_simcse(cfg, tmp_path / "run")


def test_simcse_applies_matryoshka_weights(tiny_word_llama, text_corpus, tmp_path):
    """Weights scale each prefix's term: weights of 3 everywhere give three times the unweighted first loss
    (same seed, data and dropout, so the first step's embeddings are identical)."""

    def first_loss(name: str, weights: list[float]) -> float:
        cfg = simcse_config(
            tiny_word_llama,
            text_corpus,
            max_steps=1,
            max_seq_length=16,
            log_every=1,
            matryoshka_dims=[32, 8],
            matryoshka_weights=weights,
        )
        run_simcse(cfg, tmp_path / name)
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return next(r["loss"] for r in rows if "loss" in r)

    assert first_loss("tripled", [3.0, 3.0]) == pytest.approx(3 * first_loss("plain", []), rel=1e-5)


@pytest.mark.parametrize("weights", [[1.0], [1.0, 0.0], [1.0, -2.0]])
def test_bad_matryoshka_weights_are_refused_before_anything_is_written(
    tiny_word_llama, text_corpus, tmp_path, weights
):
    cfg = simcse_config(
        tiny_word_llama, text_corpus, max_steps=1, matryoshka_dims=[32, 8], matryoshka_weights=weights
    )
    with pytest.raises(ConfigError, match="matryoshka_weights"):
        run_simcse(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
