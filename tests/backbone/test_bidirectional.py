"""Bidirectional vs causal behaviour for every family and attention implementation."""

import pytest
import torch
from transformers import AutoModel

from decoder2vec.backbone.bidirectional import measure_first_token_shift, set_bidirectional, verify_attention
from decoder2vec.backbone.loading import load_backbone
from decoder2vec.encoding.tokenization import tokenize_batch
from decoder2vec.errors import BidirectionalityError, ModelLoadError
from tests.conftest import FAMILY_CASES, SENTENCES, save_tiny_model


def plain_states(folder, impl, batch, attention_4d=None):
    """Hidden states of the unmodified transformers model (no decoder2vec code involved)."""
    model = AutoModel.from_pretrained(folder, attn_implementation=impl).eval()
    mask = batch.attention_mask if attention_4d is None else attention_4d
    with torch.no_grad():
        return model(
            input_ids=batch.input_ids, attention_mask=mask, position_ids=batch.position_ids
        ).last_hidden_state


def padding_only_4d_mask(attention_mask):
    """Reference bidirectional mask built by hand: every query sees every real key, nothing else."""
    keys = attention_mask[:, None, None, :].bool()
    return torch.zeros(keys.shape, dtype=torch.float32).masked_fill(~keys, torch.finfo(torch.float32).min)


@pytest.mark.parametrize(("family", "impl"), FAMILY_CASES)
def test_modes_match_references(tiny_model_factory, family, impl):
    folder = tiny_model_factory(family, impl)
    tok_batch = tokenize_batch(
        __import__("transformers").AutoTokenizer.from_pretrained(folder), SENTENCES[:4]
    )
    real = tok_batch.attention_mask.bool()

    causal, _ = load_backbone(folder, bidirectional=False, attn_implementation=impl)
    bidir, _ = load_backbone(folder, bidirectional=True, attn_implementation=impl)
    with torch.no_grad():
        causal_states = causal(**tok_batch.model_inputs()).last_hidden_state
        bidir_states = bidir(**tok_batch.model_inputs()).last_hidden_state

    # Causal mode is exactly the unmodified model.
    torch.testing.assert_close(
        causal_states[real], plain_states(folder, impl, tok_batch)[real], rtol=1e-5, atol=1e-5
    )
    # Bidirectional mode equals the unmodified model fed a hand-made padding-only 4D mask.
    reference = plain_states(folder, "eager", tok_batch, padding_only_4d_mask(tok_batch.attention_mask))
    torch.testing.assert_close(bidir_states[real], reference[real], rtol=1e-4, atol=1e-5)
    # And the two really differ.
    assert (bidir_states[real] - causal_states[real]).abs().max() > 1e-3


@pytest.mark.parametrize(("family", "impl"), FAMILY_CASES)
def test_batch_of_one_without_padding_is_bidirectional(tiny_model_factory, family, impl):
    # The classic silent failure: no padding -> no mask -> the kernel falls back to is_causal=True.
    model, _ = load_backbone(tiny_model_factory(family, impl), bidirectional=True, attn_implementation=impl)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    changed = torch.tensor([[5, 6, 7, 8, 10]])
    with torch.no_grad():
        a = model(input_ids=ids).last_hidden_state[0, 0]
        b = model(input_ids=changed).last_hidden_state[0, 0]
    assert (a - b).abs().max() > 1e-4


def test_self_check_reports_both_paths(tiny_llama):
    model, _ = load_backbone(tiny_llama, bidirectional=True)
    unpadded, padded = measure_first_token_shift(model)
    assert unpadded > 1e-3 and padded > 1e-3
    set_bidirectional(model, False)
    assert max(measure_first_token_shift(model)) < 1e-6


def test_ignored_flag_raises(tiny_llama, monkeypatch):
    # Simulate a transformers version / architecture that ignores config.is_causal.
    from transformers.models.llama import modeling_llama

    original = modeling_llama.LlamaModel.forward

    def always_causal(self, *args, **kwargs):
        kwargs["is_causal"] = True
        return original(self, *args, **kwargs)

    monkeypatch.setattr(modeling_llama.LlamaModel, "forward", always_causal)
    with pytest.raises(BidirectionalityError, match="still attends causally.*transformers >= 5.2"):
        load_backbone(tiny_llama, bidirectional=True)


def test_encoder_models_are_rejected(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    ).save_pretrained(tmp_path)
    model = AutoModel.from_pretrained(tmp_path).eval()
    with pytest.raises(BidirectionalityError, match="not a causal decoder"):
        verify_attention(model, expect_bidirectional=True)


def test_non_decoder_architecture_is_rejected(tmp_path):
    from transformers import T5Config, T5Model

    T5Model(T5Config(vocab_size=50, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)).save_pretrained(
        tmp_path
    )
    with pytest.raises(ModelLoadError, match="'t5' model, which is not a decoder-only"):
        load_backbone(tmp_path)


def test_saved_flags_reach_plain_transformers(tmp_path):
    folder = save_tiny_model(tmp_path / "m", "qwen3")
    from decoder2vec import Encoder

    Encoder.from_pretrained(folder).save(tmp_path / "enc")
    import json

    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["is_causal"] is False and config["use_bidirectional_attention"] is True
    # A plain AutoModel load (no decoder2vec) is bidirectional by the config alone.
    plain = AutoModel.from_pretrained(tmp_path / "enc").eval()
    assert min(measure_first_token_shift(plain)) > 1e-3
