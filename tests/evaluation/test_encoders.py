"""Echo embeddings pool exactly the second copy; the sentence-transformers adapter keeps order and prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decoder2vec.evaluation import EchoEncoder, SentenceTransformerEncoder, TextEncoder
from decoder2vec.evaluation.encoders import ECHO_TEMPLATE
from decoder2vec.evaluation.evaluators import encode_unique

TEXTS = ["A plane is taking off.", "The cat sat on the mat while the dog slept.", "Three boys"]


def test_echo_pools_only_the_second_copy(tiny_encoder) -> None:
    echo = EchoEncoder(tiny_encoder)
    prefixes = echo.echo_instructions(TEXTS)
    assert prefixes[0] == ECHO_TEMPLATE.format(text=TEXTS[0])
    batch = tiny_encoder.tokenize(TEXTS, instruction=prefixes)
    tok = tiny_encoder.tokenizer
    # The template ends in a space; byte-level BPEs fold it into the second copy's first token.
    lead = " " if tiny_encoder.builder.boundary == "space_joins_text" else ""
    for row, text in enumerate(TEXTS):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        pooled = batch.input_ids[row][batch.pool_mask[row].bool()].tolist()
        second_copy = tok(lead + text, add_special_tokens=False)["input_ids"]
        # pooled tokens are the text's own tokens, and they are the last real tokens of the sequence
        assert pooled == second_copy
        assert ids[-len(second_copy) :] == second_copy
        # the first copy sits in the unpooled part, so it is attended to but not pooled
        unpooled = tok.decode(ids[: len(ids) - len(second_copy)])
        assert text in unpooled

    # the embedding is the mean of the hidden states over those positions, computed here by hand
    states = tiny_encoder.token_states(batch)
    manual = []
    for row, text in enumerate(TEXTS):
        n_text = len(tok(lead + text, add_special_tokens=False)["input_ids"])
        last = int(batch.attention_mask[row].sum())  # right padding: real tokens are 0..last-1
        manual.append(states[row, last - n_text : last].mean(dim=0))
    got = echo.encode(TEXTS, batch_size=2)
    np.testing.assert_allclose(got, torch.stack(manual).numpy(), atol=1e-5)


def test_echo_puts_the_task_instruction_before_the_first_copy(hash_encoder) -> None:
    echo = EchoEncoder(hash_encoder)
    echo.encode(["x", "y"], instruction="Retrieve similar text:")
    texts, instruction = hash_encoder.calls[-1]
    assert texts == ["x", "y"]
    assert instruction == [
        "Retrieve similar text: " + ECHO_TEMPLATE.format(text="x"),
        "Retrieve similar text: " + ECHO_TEMPLATE.format(text="y"),
    ]
    with pytest.raises(ValueError, match="'{text}'"):
        EchoEncoder(hash_encoder, template="no slot")


class FakeSentenceTransformer:
    """Records prompt= per call; the vector says which prompt and which text produced it."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def encode(
        self,
        texts,
        *,
        prompt=None,
        batch_size=32,
        normalize_embeddings=False,
        show_progress_bar=False,
        convert_to_numpy=True,
    ):
        self.calls.append((list(texts), prompt))
        return np.array([[len(t), len(prompt or "")] for t in texts], dtype=np.float32)

    def get_sentence_embedding_dimension(self) -> int:
        return 2


def test_sentence_transformer_adapter_groups_prompts_and_restores_order() -> None:
    fake = FakeSentenceTransformer()
    adapter = SentenceTransformerEncoder(fake)
    assert isinstance(adapter, TextEncoder)
    out = adapter.encode(["aa", "b", "cccc"], instruction=["P1", None, "P1"])
    np.testing.assert_array_equal(out, [[2, 2], [1, 0], [4, 2]])
    assert sorted(fake.calls, key=lambda c: str(c[1])) == [(["b"], None), (["aa", "cccc"], "P1")]
    assert adapter.encode([]).shape == (0, 2)


def test_encode_unique_embeds_each_text_once_in_input_order(hash_encoder) -> None:
    out = encode_unique(hash_encoder, ["a", "b", "a", "c", "b"], instruction="I")
    assert hash_encoder.calls == [(["a", "b", "c"], "I")]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[4])
    assert not np.allclose(out[0], out[1])
