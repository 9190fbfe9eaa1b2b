"""Instruction-aware tokenization: the pooled span is exactly the text, whatever BPE would merge."""

import torch

from decoder2vec.encoding.tokenization import SequenceBuilder, special_token_frame, tokenize_batch
from tests.conftest import build_tokenizer


def test_special_token_frame_finds_bos():
    assert special_token_frame(build_tokenizer(add_bos=True)) == ([1], [])
    assert special_token_frame(build_tokenizer(add_bos=False)) == ([], [])


def test_instruction_excluded_even_when_bpe_merges_across_the_boundary():
    tok = build_tokenizer()
    instruction, text = "Query:", "xylophone"
    joint = tok(instruction + text)["input_ids"]
    separate_text = tok(text, add_special_tokens=False)["input_ids"]
    # The fixture really merges across the boundary: joint tokenization has no clean text suffix.
    assert joint[-len(separate_text) :] != separate_text
    batch = tokenize_batch(tok, [text], instruction=instruction)
    ids, pooled = batch.input_ids[0], batch.pool_mask[0].bool()
    assert ids[pooled].tolist() == separate_text
    n_instruction = len(tok(instruction, add_special_tokens=False)["input_ids"])
    assert ids[~pooled].tolist() == [1] + tok(instruction, add_special_tokens=False)["input_ids"]
    assert int(batch.attention_mask.sum()) == 1 + n_instruction + len(separate_text)


def test_without_instruction_every_real_token_is_pooled():
    batch = tokenize_batch(build_tokenizer(), ["the cat", "a"], max_length=32)
    assert torch.equal(batch.pool_mask, batch.attention_mask)


def test_truncation_cuts_the_text_not_the_instruction():
    tok = build_tokenizer()
    builder = SequenceBuilder(tok, max_length=12, append_eos=True)
    instruction_ids = tok("Query: ", add_special_tokens=False)["input_ids"]
    [seq] = builder.build(["the quick brown fox jumps over the lazy dog"], ["Query: "])
    assert seq.truncated and len(seq.ids) == 12
    assert seq.ids[: 1 + len(instruction_ids)] == [1] + instruction_ids
    assert seq.ids[-1] == tok.eos_token_id  # the appended eos survives truncation too


def test_instruction_too_long_is_a_clear_error():
    builder = SequenceBuilder(build_tokenizer(), max_length=4)
    try:
        builder.build(["text"], ["a long instruction"])
    except ValueError as exc:
        assert "instruction" in str(exc) and "max_length=4" in str(exc)
    else:
        raise AssertionError("expected ValueError")


def test_left_and_right_padding_give_the_same_positions_for_real_tokens():
    tok = build_tokenizer()
    builder = SequenceBuilder(tok, 64)
    seqs = builder.build(["the cat sat", "a"])
    right, left = builder.collate(seqs, "right"), builder.collate(seqs, "left")
    for batch in (right, left):
        real = batch.attention_mask.bool()
        assert [batch.position_ids[i][real[i]].tolist() for i in range(2)] == [
            list(range(len(s.ids))) for s in seqs
        ]
    assert left.attention_mask[1, 0] == 0 and right.attention_mask[1, -1] == 0


def test_per_text_instructions():
    tok = build_tokenizer()
    batch = tokenize_batch(tok, ["the cat", "the cat"], instruction=["Query: ", ""])
    pooled = [batch.input_ids[i][batch.pool_mask[i].bool()].tolist() for i in range(2)]
    assert (
        pooled[0] == tok(" the cat", add_special_tokens=False)["input_ids"]
    )  # the boundary space joins the text
    assert (
        pooled[1] == [1] + tok("the cat", add_special_tokens=False)["input_ids"]
    )  # no instruction: all pooled, BOS too
    assert batch.pool_mask[1].sum() == batch.attention_mask[1].sum()


def sentencepiece_like_tokenizer():
    """A Metaspace BPE: every word carries its own leading '▁', as Llama-2/Mistral/Gemma tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["▁Query:", "▁how", "▁do", "▁plants", "▁grow?", "▁hello", "▁world"]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for word in words:
        vocab[word] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def test_boundary_whitespace_matches_natural_tokenization():
    """'Query: ' + text gives exactly the ids of the joined string, for both tokenizer styles."""
    cases = [
        (build_tokenizer(add_bos=False), "the cat sat"),
        (sentencepiece_like_tokenizer(), "how do plants grow?"),
    ]
    for tok, text in cases:
        builder = SequenceBuilder(tok, 64)
        assert builder.boundary != "verbatim"
        [seq] = builder.build([text], ["Query: "])
        assert seq.ids == tok("Query: " + text, add_special_tokens=False)["input_ids"]
        joined = "".join(tok.convert_ids_to_tokens(seq.ids[seq.n_unpooled :])).replace("▁", " ")
        assert joined.strip() == text
    # For the SentencePiece-style one, the naive split would leave the space as an unknown token.
    tok = sentencepiece_like_tokenizer()
    assert tok.unk_token_id in tok("Query: ", add_special_tokens=False)["input_ids"]
