"""GradCache gives the full-batch gradient, and replays dropout exactly."""

import pytest
import torch

from decoder2vec.encoding.tokenization import tokenize_batch
from decoder2vec.training.gradcache import grad_cache_step, split_batch
from decoder2vec.training.losses import hard_negative_loss
from decoder2vec.training.modules import Embedder, embed, set_attention_dropout

from .conftest import SENTENCES, build_model


def make_embedder(tokenizer, dropout: float) -> Embedder:
    from decoder2vec.backbone.bidirectional import set_bidirectional

    base = build_model(len(tokenizer), seed=3).model
    set_bidirectional(base, True)
    set_attention_dropout(base, dropout)
    return Embedder(base, "mean").train()


def batches(tokenizer):
    q = tokenize_batch(tokenizer, SENTENCES[:6], instruction="the a", max_length=32)
    p = tokenize_batch(tokenizer, SENTENCES[6:12], max_length=32)
    n = tokenize_batch(tokenizer, SENTENCES[12:18], max_length=32)
    return q, p, n


def grads(model):
    return {k: v.grad.clone() for k, v in model.named_parameters() if v.grad is not None}


def loss_fn(q, p, n):
    return hard_negative_loss(q, p, n, temperature=0.05)


def test_gradcache_equals_full_batch_without_dropout(tiny_tokenizer):
    model = make_embedder(tiny_tokenizer, dropout=0.0)
    q, p, n = batches(tiny_tokenizer)
    dev = torch.device("cpu")
    full = loss_fn(embed(model, q, dev), embed(model, p, dev), embed(model, n, dev))
    full.backward()
    reference = grads(model)
    model.zero_grad()
    cached = grad_cache_step(lambda b: embed(model, b, dev), [split_batch(x, 2) for x in (q, p, n)], loss_fn)
    got = grads(model)
    assert torch.allclose(cached, full.detach(), atol=1e-6)
    assert reference.keys() == got.keys() and len(got) > 0
    for k in reference:
        assert torch.allclose(got[k], reference[k], atol=1e-5, rtol=1e-4), k


def test_gradcache_replays_dropout(tiny_tokenizer):
    """With dropout on, the replayed micro-batches must see the same masks as the cached pass: the
    gradient equals one computed by running the same micro-batches, in the same RNG order, with grad."""
    model = make_embedder(tiny_tokenizer, dropout=0.3)
    for m in model.modules():  # make dropout matter in the MLP path too
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.3
    q, p, n = batches(tiny_tokenizer)
    dev = torch.device("cpu")
    sides = [split_batch(x, 2) for x in (q, p, n)]

    torch.manual_seed(11)
    reps = [torch.cat([embed(model, mb, dev) for mb in side]) for side in sides]
    loss_fn(*reps).backward()
    reference = grads(model)
    model.zero_grad()

    torch.manual_seed(11)
    grad_cache_step(lambda b: embed(model, b, dev), sides, loss_fn)
    got = grads(model)
    for k in reference:
        assert torch.allclose(got[k], reference[k], atol=1e-5, rtol=1e-4), k

    # and dropout does change things: a different seed gives a different gradient
    model.zero_grad()
    torch.manual_seed(12)
    grad_cache_step(lambda b: embed(model, b, dev), sides, loss_fn)
    other = grads(model)
    assert any(not torch.allclose(other[k], reference[k], atol=1e-5) for k in reference)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_never_enters_pooling(tiny_tokenizer, side):
    model = make_embedder(tiny_tokenizer, dropout=0.0).eval()
    texts = ["the cat", "the dog ran in the park at night and the sun is hot"]
    dev = torch.device("cpu")
    with torch.no_grad():
        together = embed(model, tokenize_batch(tiny_tokenizer, texts, max_length=32, padding_side=side), dev)
        alone = torch.cat(
            [embed(model, tokenize_batch(tiny_tokenizer, [t], max_length=32), dev) for t in texts]
        )
        # changing what sits in the padding slots changes nothing either
        batch = tokenize_batch(tiny_tokenizer, texts, max_length=32, padding_side=side)
        batch.input_ids[batch.attention_mask == 0] = 17
        garbage = embed(model, batch, dev)
    assert (batch.attention_mask == 0).any()
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(garbage, alone, atol=1e-5)
