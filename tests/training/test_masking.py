import pytest
import torch

from decoder2vec.training.errors import TrainingError
from decoder2vec.training.masking import IGNORE_INDEX, mask_tokens, maskable_positions, resolve_mask_token

SPECIAL = {0, 1, 2}  # pad, bos, eos
MASK_ID, VOCAB = 4, 69


def batch(n=64, length=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, length), generator=g)
    ids[:, 0] = 1  # bos
    ids[::3, 40] = 2  # an eos inside
    attn = torch.ones_like(ids)
    attn[1::2, 100:] = 0  # right padding
    ids[attn == 0] = 0
    return ids, attn


@pytest.mark.parametrize("strategy,p", [("bert", 0.2), ("all_mask", 0.8)])
def test_special_padding_and_first_position_never_masked(strategy, p):
    ids, attn = batch()
    ok = maskable_positions(ids, attn, SPECIAL)
    masked, labels = mask_tokens(
        ids,
        ok,
        mask_token_id=MASK_ID,
        vocab_size=VOCAB,
        probability=p,
        strategy=strategy,
        generator=torch.Generator().manual_seed(1),
    )
    selected = labels != IGNORE_INDEX
    assert selected.any()
    assert not selected[~ok].any()
    assert not selected[:, 0].any()
    assert not selected[attn == 0].any()
    assert not torch.isin(ids[selected], torch.tensor(sorted(SPECIAL))).any()
    # unselected tokens are untouched, labels hold the original ids
    assert torch.equal(masked[~selected], ids[~selected])
    assert torch.equal(labels[selected], ids[selected])


def test_bert_statistics():
    ids, attn = batch(n=256, length=256)
    ok = maskable_positions(ids, attn, SPECIAL)
    masked, labels = mask_tokens(
        ids,
        ok,
        mask_token_id=MASK_ID,
        vocab_size=VOCAB,
        probability=0.2,
        strategy="bert",
        generator=torch.Generator().manual_seed(2),
    )
    selected = labels != IGNORE_INDEX
    rate = selected.sum().item() / ok.sum().item()
    assert abs(rate - 0.2) < 0.01
    n = selected.sum().item()
    as_mask = (masked[selected] == MASK_ID).sum().item() / n
    unchanged = (masked[selected] == ids[selected]).sum().item() / n
    assert abs(as_mask - 0.8) < 0.015
    # 10% kept, plus random draws that happen to hit the original token (1/VOCAB of the other 10%)
    assert abs(unchanged - (0.1 + 0.1 / VOCAB)) < 0.01
    random = 1 - as_mask - unchanged
    assert abs(random - 0.1 * (1 - 1 / VOCAB)) < 0.01


def test_all_mask_statistics():
    ids, attn = batch(n=256, length=256)
    ok = maskable_positions(ids, attn, SPECIAL)
    masked, labels = mask_tokens(
        ids,
        ok,
        mask_token_id=MASK_ID,
        vocab_size=VOCAB,
        probability=0.8,
        strategy="all_mask",
        generator=torch.Generator().manual_seed(3),
    )
    selected = labels != IGNORE_INDEX
    assert abs(selected.sum().item() / ok.sum().item() - 0.8) < 0.01
    assert (masked[selected] == MASK_ID).all()


def test_masking_is_reproducible_with_generator():
    ids, attn = batch()
    ok = maskable_positions(ids, attn, SPECIAL)
    run = lambda: mask_tokens(
        ids,
        ok,
        mask_token_id=MASK_ID,
        vocab_size=VOCAB,
        probability=0.2,
        generator=torch.Generator().manual_seed(7),
    )
    a, b = run(), run()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_arguments():
    ids, attn = batch(n=2, length=128)
    ok = maskable_positions(ids, attn, SPECIAL)
    with pytest.raises(TrainingError, match="probability"):
        mask_tokens(ids, ok, mask_token_id=MASK_ID, vocab_size=VOCAB, probability=1.5)
    with pytest.raises(TrainingError, match="strategy"):
        mask_tokens(ids, ok, mask_token_id=MASK_ID, vocab_size=VOCAB, probability=0.2, strategy="span")


def test_resolve_mask_token(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    assert resolve_mask_token(tok, "blank") == (tok.convert_tokens_to_ids("_"), False)
    assert resolve_mask_token(tok, "eos") == (tok.eos_token_id, False)
    assert resolve_mask_token(tok, "pad") == (tok.pad_token_id, False)
    n = len(tok)
    token_id, added = resolve_mask_token(tok, "new")
    assert added and token_id == n and len(tok) == n + 1
    with pytest.raises(TrainingError, match="unknown mask_token"):
        resolve_mask_token(tok, "bogus")
