"""Encoder.encode_chunks: late chunking against an independent forward, naive chunking against encode,
exact character spans, documents longer than one forward, batching bounds and refusals."""

import itertools

import numpy as np
import pytest
import torch
from transformers import AutoModel

from decoder2vec import Encoder
from decoder2vec.encoding.chunking import (
    Chunk,
    Span,
    assign_windows,
    late_windows,
    sentence_starts,
    split_documents,
)
from decoder2vec.encoding.compact import finish
from decoder2vec.encoding.encoder import MAX_ATTENTION_CELLS, plan_batches
from decoder2vec.encoding.tokenization import SequenceBuilder
from tests.conftest import BYTE_CORPUS, build_tokenizer

# ASCII with single spaces: every byte-level token's offsets start at its leading space, so "the tokens
# overlapping a chunk's characters" is an independent description of the chunk's token span.
DOC = " ".join(BYTE_CORPUS)
DOCS = [
    DOC,
    "The cat sat on the mat. Dr. Smith said no.\n\nA new paragraph starts here!  Two spaces before it.",
    "  Leading and trailing whitespace, é ü 日本 and emoji 🙂 in it.\n\n\n",
    "one",
]


@pytest.fixture(scope="module")
def encoder(tiny_byte_llama):
    return Encoder.from_pretrained(tiny_byte_llama)


@pytest.fixture(scope="module")
def reference_model(encoder, tmp_path_factory):
    """The same weights loaded by transformers alone; bidirectionality comes from the saved config.json."""
    folder = encoder.save(tmp_path_factory.mktemp("saved") / "encoder")
    model = AutoModel.from_pretrained(folder)
    assert model.config.is_causal is False
    return model.eval()


def token_span(tokenizer, text: str, start: int, end: int, shift: int = 0) -> list[int]:
    """Indices (among ``text``'s tokens, plus ``shift``) of the tokens overlapping characters [start, end)."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [shift + t for t, (a, b) in enumerate(offsets) if a < end and b > start]


@pytest.mark.parametrize("chunking", ["sentences", "tokens"])
def test_late_chunk_is_the_mean_of_its_span_in_one_full_forward(encoder, reference_model, chunking):
    chunks = encoder.encode_chunks(DOC, chunking=chunking, chunk_size=24)
    assert len(chunks) > 3 and all(isinstance(c, Chunk) for c in chunks)
    ids = encoder.tokenizer(DOC, add_special_tokens=True)["input_ids"]  # "<s>" + the document
    with torch.no_grad():
        states = reference_model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    for chunk in chunks:
        span = token_span(encoder.tokenizer, DOC, chunk.start, chunk.end, shift=1)
        assert len(span) <= 24
        np.testing.assert_allclose(chunk.embedding, states[span].mean(0).numpy(), atol=1e-5)


def test_an_instruction_is_attended_to_not_pooled(encoder, reference_model):
    instruction = "Retrieve semantically similar text: "
    doc = " ".join(BYTE_CORPUS[:6])  # the instruction and the document within one forward
    chunks = encoder.encode_chunks(doc, chunking="tokens", chunk_size=30, instruction=instruction)
    batch = encoder.tokenize([doc], instruction)  # the sequence encode() builds: specials, instruction, text
    assert batch.input_ids.shape[1] < encoder.max_length  # nothing truncated
    with torch.no_grad():
        states = reference_model(input_ids=batch.input_ids).last_hidden_state[0]
    text_positions = batch.pool_mask[0].nonzero().flatten().tolist()
    head = text_positions[0]
    # The document is tokenized after the instruction, its first token taking the instruction's space.
    spaced = encoder.builder.split_instruction(instruction, doc)[1]
    assert spaced == " " + doc
    for chunk in chunks:
        span = token_span(encoder.tokenizer, spaced, chunk.start + 1, chunk.end + 1, shift=head)
        np.testing.assert_allclose(chunk.embedding, states[span].mean(0).numpy(), atol=1e-5)


def test_naive_chunks_equal_encode_of_their_text(encoder):
    docs = DOCS[:3]
    for instruction in (None, "Query: "):
        chunked = encoder.encode_chunks(
            docs, chunking="sentences", chunk_size=16, overlap=4, late=False, instruction=instruction
        )
        texts = [c.text for chunks in chunked for c in chunks]
        np.testing.assert_allclose(
            np.stack([c.embedding for cs in chunked for c in cs]),
            encoder.encode(texts, instruction=instruction),
            atol=1e-6,
        )


@pytest.mark.parametrize("chunking", ["sentences", "tokens"])
@pytest.mark.parametrize("size", [1, 5, 16, 1000])
def test_spans_cover_each_document_exactly(encoder, chunking, size):
    for doc, chunks in zip(DOCS, encoder.encode_chunks(DOCS, chunking=chunking, chunk_size=size)):
        assert chunks[0].start == len(doc) - len(doc.lstrip())
        assert chunks[-1].end == len(doc.rstrip())
        for chunk, after in zip(chunks, chunks[1:] + [None]):
            assert doc[chunk.start : chunk.end] == chunk.text and chunk.text == chunk.text.strip()
            if after is not None:  # contiguous: only whitespace between neighbours
                assert chunk.end <= after.start and not doc[chunk.end : after.start].strip()
    if size == 1000:  # everything fits one chunk
        assert [len(c) for c in encoder.encode_chunks(DOCS, chunking=chunking, chunk_size=size)] == [1] * 4


def test_token_and_sentence_limits_and_overlap(encoder):
    builder = encoder.builder
    # Without spaces no token is whitespace-only, so no chunk edge is trimmed: exact window arithmetic.
    (doc,) = split_documents(builder, [DOC.replace(" ", "")], chunking="tokens", chunk_size=10, overlap=3)
    lengths = [s.stop - s.first for s in doc.spans]
    assert lengths[:-1] == [10] * (len(lengths) - 1) and lengths[-1] <= 10
    assert all(b.first == a.stop - 3 for a, b in zip(doc.spans, doc.spans[1:]))
    assert doc.spans[-1].stop == len(doc.ids)
    # Sentences: whole sentences while they fit (the longest here is 46 tokens), each chunk starting where
    # a sentence starts; a longer sentence is cut into pieces.
    (doc,) = split_documents(builder, [DOC], chunking="sentences", chunk_size=50)
    starts = {0, *sentence_starts(DOC)}
    assert all(s.start in starts for s in doc.spans) and len(doc.spans) < len(starts)
    assert all(s.stop - s.first <= 50 for s in doc.spans)
    (cut,) = split_documents(builder, [DOC], chunking="sentences", chunk_size=40)
    assert sum(s.start not in starts for s in cut.spans) == 1
    # Overlap carries the trailing sentences that fit in it (never a piece of one) into the next chunk.
    (over,) = split_documents(builder, [DOC], chunking="sentences", chunk_size=50, overlap=25)
    pairs = list(itertools.pairwise(over.spans))
    assert all(b.start in starts and a.first < b.first <= a.stop + 1 for a, b in pairs)
    assert any(b.first < a.stop for a, b in pairs)


def test_sentence_boundaries():
    text = "Dr. Smith met J. Doe at 5 p.m. today. Then they left! (Quietly.) e.g. this\nnew line"
    pieces = [text[a:b] for a, b in zip([0, *sentence_starts(text)], [*sentence_starts(text), len(text)])]
    assert pieces == ["Dr. Smith met J. Doe at 5 p.m. today. ", "Then they left! ", "(Quietly.) e.g. this\n",
                      "new line"]  # fmt: skip


def test_a_cut_never_splits_a_character(encoder):
    doc = "日本語のテキスト🙂🙂 é" * 3
    (chunked,) = split_documents(encoder.builder, [doc], chunking="tokens", chunk_size=2)
    assert "".join(chunked.chunk_texts()) == doc.replace(" ", "")
    assert max(s.stop - s.first for s in chunked.spans) <= 4  # a 4-byte emoji is one indivisible unit


def test_documents_longer_than_one_forward_give_every_chunk_once(tiny_model_factory):
    """A model with a 48-token context: the document is covered by overlapping windows."""
    folder = tiny_model_factory("llama", tokenizer="bytes", bare=True, max_position_embeddings=48)
    encoder = Encoder.from_pretrained(folder)
    whole = encoder.encode_chunks(DOC, chunking="tokens", chunk_size=6, max_length=48)
    (split,) = split_documents(encoder.builder, [DOC], chunking="tokens", chunk_size=6)
    assert len(split.ids) > 100
    assert [(c.start, c.end) for c in whole] == [(s.start, s.end) for s in split.spans]
    with pytest.raises(ValueError, match="exceeds the model's context of 48"):
        encoder.encode_chunks(DOC, max_length=49)
    # Each chunk is the mean of its tokens in the forward over its window (prefix <s>, then window tokens).
    budget = 48 - 1
    windows = late_windows(len(split.ids), budget, 6)
    assert len(windows) > 2
    chosen = assign_windows(split.spans, windows, len(split.ids))
    for chunk, span, w in zip(whole, split.spans, chosen):
        start, stop = windows[w]
        ids = [encoder.tokenizer.bos_token_id] + split.ids[start:stop]
        with torch.no_grad():
            states = encoder.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        expected = states[1 + span.first - start : 1 + span.stop - start].mean(0).numpy()
        np.testing.assert_allclose(chunk.embedding, expected, atol=1e-5)
    # A smaller window than the context works the same way.
    smaller = encoder.encode_chunks(DOC, chunking="tokens", chunk_size=6, max_length=20)
    assert [(c.start, c.end) for c in smaller] == [(c.start, c.end) for c in whole]


@pytest.mark.parametrize("seed", range(20))
def test_windows_hold_every_chunk_once_with_the_most_context(seed):
    rng = np.random.default_rng(seed)
    n, longest = int(rng.integers(1, 400)), int(rng.integers(1, 12))
    budget = int(rng.integers(longest + 1, 80))
    cuts = sorted({0, n, *rng.integers(0, n, size=n // 3).tolist()})
    spans = [Span(a, b, a, b) for a, b in itertools.pairwise(cuts) if b - a <= longest]
    windows = late_windows(n, budget, longest)
    assert windows[0][0] == 0 and windows[-1][1] == n and all(b - a <= budget for a, b in windows)
    for span, w in zip(spans, assign_windows(spans, windows, n)):
        start, stop = windows[w]
        assert start <= span.first and span.stop <= stop
        if len(windows) > 1:  # context on both sides, unless at the document's edge
            margin = min(span.first - start if start else n, stop - span.stop if stop < n else n)
            assert margin >= min(budget // 8, span.first, n - span.stop) - longest


def test_output_options_apply_to_chunk_vectors(encoder):
    raw = np.stack([c.embedding for c in encoder.encode_chunks(DOC, chunk_size=20)])
    spec = encoder.output_spec(dimensions=16, normalize=True, precision="binary")
    compact = encoder.encode_chunks(DOC, chunk_size=20, dimensions=16, normalize=True, precision="binary")
    np.testing.assert_array_equal(np.stack([c.embedding for c in compact]), finish(raw, spec))
    assert compact[0].embedding.dtype == np.int8 and compact[0].embedding.shape == (2,)


def test_late_forwards_stay_within_the_batch_bounds(encoder, monkeypatch):
    """Long documents go one at a time; short ones share a forward under the padded-token budget."""
    docs = [DOC, "a short one", "another short text", "hi there", DOC[:200]]
    one_by_one = encoder.encode_chunks(docs, chunk_size=16, batch_size=1)
    shapes = []
    forward = encoder.model.forward
    record = lambda **kw: shapes.append(tuple(kw["input_ids"].shape)) or forward(**kw)
    monkeypatch.setattr(encoder.model, "forward", record)
    monkeypatch.setattr(encoder, "max_batch_tokens", 64)
    chunked = encoder.encode_chunks(docs, chunk_size=16)
    for got, expected in zip(chunked, one_by_one):
        np.testing.assert_allclose([c.embedding for c in got], [c.embedding for c in expected], atol=1e-5)
    assert all(b == 1 or b * length <= 64 for b, length in shapes) and any(b > 1 for b, _ in shapes)
    assert sum(b for b, _ in shapes) == len(docs)


def test_plan_batches_bounds_attention_cells():
    lengths = np.array([8192, 8192, 4096, 4096, 4096, 4096, 4096, 512, 512])
    batches = plan_batches(lengths, 32, None, MAX_ATTENTION_CELLS)
    assert batches == [(0, 1), (1, 2), (2, 6), (6, 9)]
    assert plan_batches(lengths, 32, None) == [(0, 9)]


def test_max_length_can_be_raised_to_the_context(tiny_byte_llama):
    encoder = Encoder.from_pretrained(tiny_byte_llama)
    encoder.max_length = 256  # the tiny model's context
    long = " ".join(BYTE_CORPUS * 4)
    assert len(encoder.builder.build([long])[0].ids) == 256
    with pytest.raises(ValueError, match="exceeds the model's context of 256"):
        encoder.max_length = 257


def fake_tokenizer_dropping_x():
    """A tokenizer whose normalizer deletes "x": a document of x's gives no token at all."""
    from tokenizers import normalizers

    tok = build_tokenizer(kind="bpe")
    tok.backend_tokenizer.normalizer = normalizers.Replace("x", "")
    return tok


@pytest.mark.parametrize(
    ("documents", "options", "error", "message"),
    [
        (["fine"], {"chunk_size": 0}, ValueError, "chunk_size must be positive, got 0"),
        (["fine"], {"chunk_size": 4, "overlap": 4}, ValueError, r"overlap must be in \[0, chunk_size=4\)"),
        (["fine"], {"overlap": -1}, ValueError, "overlap must be in"),
        (["fine"], {"chunk_size": 2.5}, TypeError, "chunk_size must be an integer"),
        (["fine"], {"chunking": "pages"}, ValueError, "chunking must be one of sentences, tokens"),
        (["fine", ""], {}, ValueError, r"documents\[1\] is empty or whitespace-only"),
        (["fine", "ok", " \n\t"], {}, ValueError, r"documents\[2\] is empty or whitespace-only"),
        (["fine", 3], {}, TypeError, r"documents\[1\] is int, not str"),
        (["fine"], {"late": "yes"}, TypeError, "late must be True or False"),
        (["fine"], {"batch_size": 0}, ValueError, "batch_size must be positive"),
        (["fine"], {"dimensions": 99}, ValueError, r"outside \[1, 32\]"),
    ],
)
def test_bad_input_is_named_before_any_model_work(encoder, monkeypatch, documents, options, error, message):
    monkeypatch.setattr(encoder.model, "forward", lambda **kw: pytest.fail("the model ran"))
    with pytest.raises(error, match=message):
        encoder.encode_chunks(documents, **options)


def test_a_document_without_chunks_is_named():
    builder = SequenceBuilder(fake_tokenizer_dropping_x(), 64)
    with pytest.raises(ValueError, match=r"documents\[1\] yields no chunk"):
        split_documents(builder, ["a fine text", "xxx"])
    with pytest.raises(ValueError, match=r"c\.txt:7 yields no chunk"):
        split_documents(builder, ["xx x"], name=lambda i: "c.txt:7")


def test_late_chunking_needs_mean_pooling(tiny_byte_llama):
    encoder = Encoder.from_pretrained(tiny_byte_llama, pooling="last_token")
    with pytest.raises(ValueError, match="late chunking mean-pools .* 'last_token'"):
        encoder.encode_chunks(DOC)
    assert len(encoder.encode_chunks(DOC, chunk_size=40, late=False)) > 1


@pytest.mark.real_model
def test_late_chunks_of_the_default_encoder_match_transformers():
    from decoder2vec.backbone.loading import resolve_model_path
    from decoder2vec.training.data.corpus import wiki_articles

    encoder = Encoder.from_pretrained("smollm2-135m-llm2vec")
    encoder.max_length = 8192  # the model's context: allowed
    assert encoder.max_length == 8192
    doc = " ".join(wiki_articles()[:4])
    chunks = encoder.encode_chunks(doc, chunk_size=64)
    model = AutoModel.from_pretrained(resolve_model_path("smollm2-135m-llm2vec")).eval()
    ids = encoder.builder.build([doc])[0].ids
    with torch.no_grad():
        states = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    front = len(encoder.builder.prefix)
    for chunk in chunks:
        span = token_span(encoder.tokenizer, doc, chunk.start, chunk.end, shift=front)
        np.testing.assert_allclose(chunk.embedding, states[span].mean(0).numpy(), atol=1e-4)
