"""Encoder.encode: invariances, references, bad inputs, save/load and sentence-transformers round trips."""

import json
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModel

from decoder2vec import Encoder
from decoder2vec.encoding.pooling import POOLING_MODES
from decoder2vec.errors import ModelLoadError
from tests.conftest import SENTENCES


@pytest.fixture(scope="module")
def encoder(tiny_llama):
    return Encoder.from_pretrained(tiny_llama)


def test_shape_dtype_and_order(encoder):
    emb = encoder.encode(SENTENCES)
    assert emb.shape == (len(SENTENCES), 32) and emb.dtype == np.float32
    one_by_one = np.stack([encoder.encode(s) for s in SENTENCES])
    np.testing.assert_allclose(emb, one_by_one, atol=1e-5)


@pytest.mark.parametrize("pooling", POOLING_MODES)
def test_batch_size_padding_side_and_position_do_not_matter(tiny_llama, pooling):
    enc = Encoder.from_pretrained(tiny_llama, pooling=pooling)
    reference = enc.encode(SENTENCES, batch_size=len(SENTENCES))
    np.testing.assert_allclose(enc.encode(SENTENCES, batch_size=1), reference, atol=1e-5)
    np.testing.assert_allclose(enc.encode(SENTENCES, batch_size=3), reference, atol=1e-5)
    permutation = np.random.default_rng(0).permutation(len(SENTENCES))
    np.testing.assert_allclose(
        enc.encode([SENTENCES[i] for i in permutation]), reference[permutation], atol=1e-5
    )
    enc.tokenizer.padding_side = "left"
    try:
        np.testing.assert_allclose(enc.encode(SENTENCES, batch_size=4), reference, atol=1e-5)
    finally:
        enc.tokenizer.padding_side = "right"


@pytest.mark.parametrize("pooling", POOLING_MODES)
def test_instruction_is_attended_but_not_pooled(tiny_llama, encoder, pooling):
    """Reference: run the plain bidirectional model on the full ids and pool the text span by hand."""
    enc = Encoder(encoder.model, encoder.tokenizer, pooling=pooling)
    tok = enc.tokenizer
    instruction, text = "Query:", "xylophone thing"  # ":x" merges across the boundary in the fixture BPE
    instruction_ids = tok(instruction, add_special_tokens=False)["input_ids"]
    text_ids = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[tok.bos_token_id] + instruction_ids + text_ids])
    with torch.no_grad():
        states = enc.model(input_ids=ids).last_hidden_state[0]
    span = states[1 + len(instruction_ids) :]
    weights = torch.arange(1, len(span) + 1, dtype=torch.float32)[:, None]
    expected = {
        "mean": span.mean(0),
        "weighted_mean": (span * weights).sum(0) / weights.sum(),
        "last_token": span[-1],
        "bos": states[0],
    }[pooling]
    got = enc.encode(text, instruction=instruction)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    if pooling != "bos":
        # The instruction changes the text's states (it is attended to) ...
        assert np.abs(got - enc.encode(text)).max() > 1e-4


def test_per_text_instructions_match_one_at_a_time(encoder):
    texts, instructions = SENTENCES[:3], ["Query: ", "Passage: ", "Query: "]
    batched = encoder.encode(texts, instruction=instructions)
    singles = np.stack([encoder.encode(t, instruction=i) for t, i in zip(texts, instructions)])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_causal_mode_equals_unmodified_model(tiny_llama):
    enc = Encoder.from_pretrained(tiny_llama, bidirectional=False)
    plain = AutoModel.from_pretrained(tiny_llama).eval()
    ids = enc.tokenizer(SENTENCES[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = plain(input_ids=ids).last_hidden_state[0].mean(0)
    np.testing.assert_allclose(enc.encode(SENTENCES[0]), expected.numpy(), atol=1e-5)


def test_normalize_and_torch_output(encoder):
    emb = encoder.encode(SENTENCES[:2], normalize=True, convert_to="torch")
    assert isinstance(emb, torch.Tensor)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))


def test_append_eos_pools_the_eos_state(tiny_llama):
    enc = Encoder.from_pretrained(tiny_llama, pooling="last_token", append_eos=True)
    batch = enc.tokenize(["the cat"])
    assert batch.input_ids[0, -1] == enc.tokenizer.eos_token_id


def test_empty_list_gives_empty_matrix(encoder):
    emb = encoder.encode([])
    assert emb.shape == (0, 32) and emb.dtype == np.float32


def test_bad_items_name_the_index(encoder):
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        encoder.encode(["ok", 3])
    with pytest.raises(ValueError, match=r"texts\[2\] is empty or whitespace-only"):
        encoder.encode(["ok", "fine", "  \n"])
    with pytest.raises(ValueError, match="2 instructions for 3 texts"):
        encoder.encode(["a", "b", "c"], instruction=["x", "y"])
    with pytest.raises(ValueError, match="convert_to"):
        encoder.encode(["a"], convert_to="list")


def test_long_text_truncated_with_one_warning(tiny_llama):
    enc = Encoder.from_pretrained(tiny_llama, max_length=16)
    long_texts = ["the thing " * 20, "another long one " * 20, "short"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb = enc.encode(long_texts)
    messages = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert messages == ["2 of 3 texts were longer than max_length=16 tokens and were truncated"]
    # Reference: the plain model on BOS + the first 15 text tokens.
    ids = [enc.tokenizer.bos_token_id] + enc.tokenizer(long_texts[0], add_special_tokens=False)["input_ids"][
        :15
    ]
    with torch.no_grad():
        expected = enc.model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0)
    np.testing.assert_allclose(emb[0], expected.numpy(), atol=1e-5)


def test_save_load_round_trip_is_exact(tiny_llama, tmp_path):
    enc = Encoder.from_pretrained(tiny_llama, pooling="weighted_mean", max_length=64)
    enc.save(tmp_path / "enc")
    loaded = Encoder.from_pretrained(tmp_path / "enc")
    assert (loaded.pooling, loaded.max_length, loaded.bidirectional) == ("weighted_mean", 64, True)
    np.testing.assert_array_equal(loaded.encode(SENTENCES), enc.encode(SENTENCES))
    # Saving over an existing folder replaces it whole.
    Encoder.from_pretrained(tiny_llama, pooling="bos").save(tmp_path / "enc", overwrite=True)
    assert json.loads((tmp_path / "enc" / "decoder2vec_config.json").read_text())["pooling"] == "bos"
    assert [p.name for p in tmp_path.iterdir()] == ["enc"]  # no temporary folders left behind


@pytest.mark.parametrize("pooling", POOLING_MODES)
def test_sentence_transformers_round_trip(tiny_model_factory, tmp_path, pooling):
    from sentence_transformers import SentenceTransformer

    enc = Encoder.from_pretrained(tiny_model_factory("qwen2"), pooling=pooling)
    enc.save(tmp_path / "enc")
    pooling_config = json.loads((tmp_path / "enc" / "1_Pooling" / "config.json").read_text())
    assert sum(v for k, v in pooling_config.items() if k.startswith("pooling_mode_")) == 1
    st = SentenceTransformer(str(tmp_path / "enc"), device="cpu")  # no trust_remote_code
    np.testing.assert_allclose(st.encode(SENTENCES, batch_size=3), enc.encode(SENTENCES), atol=1e-5)
    # Instructions map to ST prompts, excluded from pooling on both sides (no boundary merge here).
    # (weighted_mean differs by design with a prompt: we restart position weights at the text, as
    # LLM2Vec does; ST keeps counting from the prompt's start. bos pools the BOS on both sides.)
    if pooling in ("mean", "last_token"):
        np.testing.assert_allclose(
            st.encode(SENTENCES[:2], prompt="Query: "),
            enc.encode(SENTENCES[:2], instruction="Query: "),
            atol=1e-5,
        )


def test_adapters_are_merged_in_order(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    lm = AutoModelForCausalLM.from_pretrained(tiny_llama)
    lm_peft = get_peft_model(
        lm,
        LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
        ),
    )
    lm_peft.save_pretrained(tmp_path / "causal_lm_adapter")  # trained on the causal-LM class (like MNTP)

    base = AutoModel.from_pretrained(tiny_llama)
    base_peft = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["k_proj", "up_proj"], init_lora_weights=False)
    )
    base_peft.save_pretrained(tmp_path / "base_adapter")  # trained on the bare model (like SimCSE)

    enc = Encoder.from_pretrained(
        tiny_llama, adapters=[tmp_path / "causal_lm_adapter", tmp_path / "base_adapter"]
    )
    # Reference: apply both adapters with peft directly, unmerged, in bidirectional mode.
    reference = Encoder(lm_peft.get_base_model().model, enc.tokenizer)
    reference.model.config.is_causal = False
    first = reference.encode(SENTENCES[:1])  # only the first adapter so far
    assert np.abs(first - Encoder.from_pretrained(tiny_llama).encode(SENTENCES[:1])).max() > 1e-4
    with torch.no_grad():
        for name, module in base_peft.get_base_model().named_modules():
            if hasattr(module, "lora_A"):
                target = reference.model.get_submodule(name)
                target.weight += module.get_delta_weight("default")
    np.testing.assert_allclose(enc.encode(SENTENCES[:3]), reference.encode(SENTENCES[:3]), atol=1e-5)


def test_bad_model_paths_name_the_problem(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model folder"):
        Encoder.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        Encoder.from_pretrained(tmp_path / "empty")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        Encoder.from_pretrained(tmp_path / "weights.bin")
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="broken.gguf"):
        Encoder.from_pretrained(tmp_path / "broken.gguf")


def test_bad_adapter_folder_is_named(tiny_llama, tmp_path):
    with pytest.raises(ModelLoadError, match=f"{tmp_path} is not a PEFT adapter folder"):
        Encoder.from_pretrained(tiny_llama, adapters=[tmp_path])


def test_plan_batches_respects_count_and_token_budget():
    from decoder2vec.encoding.encoder import plan_batches

    lengths = np.array([100, 90, 50, 50, 10, 10, 10, 5])
    assert plan_batches(lengths, 3, None) == [(0, 3), (3, 6), (6, 8)]
    # 200-token budget: 2 x 100, then 4 x 50 (counted at the batch's longest), then the short ones
    assert plan_batches(lengths, 32, 200) == [(0, 2), (2, 6), (6, 8)]
    assert plan_batches(np.array([500, 400]), 32, 100) == [(0, 1), (1, 2)]  # an over-long text still goes


def test_token_budget_does_not_change_results(tiny_llama):
    enc = Encoder.from_pretrained(tiny_llama)
    reference = enc.encode(SENTENCES, batch_size=64)
    enc.max_batch_tokens = 20
    np.testing.assert_allclose(enc.encode(SENTENCES, batch_size=64), reference, atol=1e-5)
