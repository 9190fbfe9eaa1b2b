"""Long documents: split into chunks and embed each chunk, late (Günther et al., 2024) or naively.

**Splitting.** A document is tokenized once (no special tokens) with the fast tokenizer's offset mapping;
chunks are token ranges, and their character spans come from the offsets.

- ``"tokens"``: windows of ``chunk_size`` tokens, consecutive windows sharing ``overlap`` tokens.
- ``"sentences"``: sentences (:mod:`decoder2vec.sentences`, the training data's splitter: end punctuation,
  whitespace, then a capital, digit, quote or parenthesis, not after a common abbreviation or a single
  initial; or a line break) grouped greedily up to ``chunk_size`` tokens; a sentence longer than
  ``chunk_size`` is cut into ``chunk_size``-token pieces. With ``overlap``, a chunk starts with the
  trailing sentences of the previous one that fit in ``overlap`` tokens.

A cut never falls inside a character (byte-level BPEs spread one character over several tokens).
A chunk's character span runs from its first token's start to its last token's end with surrounding
whitespace trimmed, so ``document[start:end] == chunk.text``; without overlap, consecutive chunks are
contiguous except for that trimmed whitespace (whitespace is the only text no chunk covers). Likewise a
chunk's tokens are exactly those overlapping its characters: whitespace-only tokens at its edges (a
newline, a lone space) are attended to but pooled by no chunk, and a piece that is only whitespace
becomes no chunk.

**Late chunking** (``late=True``): one forward over the whole document (prefix specials, instruction,
document, suffix specials, exactly as :meth:`Encoder.encode` builds a text), then each chunk's vector is
the mean of its own tokens' last hidden states: the instruction and special tokens are attended to,
never pooled. It is defined for mean pooling only. A document longer than one forward (``max_length``,
by default the model's context) is covered by windows overlapping by ``max(longest chunk, window / 4)``
tokens; each chunk is pooled in the window where it has the most context on its less-covered side (the
document's own edges count as full context), so every chunk is pooled exactly once.

**Naive chunking** (``late=False``): each chunk's text is embedded on its own with :meth:`Encoder.encode`.

Either way the chunk vectors go through the encoder's output step (``dimensions``, ``normalize``,
``precision``) like any other embedding.
"""

from __future__ import annotations

import bisect
import itertools
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from decoder2vec import sentences
from decoder2vec.encoding.checks import as_text_list, check_positive_int
from decoder2vec.encoding.compact import OutputSpec, finish
from decoder2vec.encoding.tokenization import SequenceBuilder

__all__ = [
    "CHUNKINGS",
    "Chunk",
    "ChunkedDocument",
    "Span",
    "embed_chunked",
    "encode_chunks",
    "split_documents",
]

CHUNKINGS = ("sentences", "tokens")
DEFAULT_CHUNK_SIZE = 256
# Windows of a document longer than one late forward overlap by at least 1/4 of a window, so a chunk
# keeps at least ~1/8 of a window of context on each side.
WINDOW_OVERLAP_FRACTION = 4
# Documents tokenized per tokenizer call (bounds the offset lists held at once).
TOKENIZE_BATCH = 256


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document: ``document[start:end] == text``, and its embedding."""

    text: str
    start: int
    end: int
    embedding: np.ndarray


@dataclass(frozen=True)
class Span:
    """A chunk before embedding: characters ``[start, end)`` and document tokens ``[first, stop)``."""

    start: int
    end: int
    first: int
    stop: int


@dataclass(frozen=True)
class ChunkedDocument:
    """A document split into chunks: its token ids (as tokenized after the instruction) and chunk spans."""

    text: str
    ids: list[int]
    spans: list[Span]

    def chunk_texts(self) -> list[str]:
        return [self.text[s.start : s.end] for s in self.spans]


# ------------------------------------------------------------------ options
def check_chunk_options(chunking: str, chunk_size, overlap) -> tuple[int, int]:
    """``(chunk_size, overlap)`` as ints; raises naming the bad option."""
    if chunking not in CHUNKINGS:
        raise ValueError(f"chunking must be one of {', '.join(CHUNKINGS)}, got {chunking!r}")
    for name, value in (("chunk_size", chunk_size), ("overlap", overlap)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not 0 <= overlap < chunk_size:
        raise ValueError(f"overlap must be in [0, chunk_size={chunk_size}), got {overlap}")
    return int(chunk_size), int(overlap)


def check_documents(documents: list, name: Callable[[int], str]) -> None:
    """Strings with something to embed; raises naming the document."""
    from decoder2vec.io import check_unicode

    for i, text in enumerate(documents):
        if not isinstance(text, str):
            raise TypeError(f"{name(i)} is {type(text).__name__}, not str")
        if not text.strip():
            raise ValueError(f"{name(i)} is empty or whitespace-only; there is nothing to embed")
        check_unicode(text, name(i))


# ------------------------------------------------------------------ splitting
def sentence_starts(text: str) -> list[int]:
    """Character offsets where a sentence after the first may start: the sentence boundaries of
    :mod:`decoder2vec.sentences` (the training data's splitter) and line breaks."""
    return sentences.sentence_starts(text, line_breaks=True)


def _tokens(builder: SequenceBuilder, documents: list[str], instruction: str | None):
    """Per document: token ids and character offsets into the document, tokenized as ``build`` would
    tokenize it after ``instruction`` (which may move the instruction's trailing whitespace in front)."""
    tokenizer = builder.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"chunking needs a fast (Rust) tokenizer for character offsets; {type(tokenizer).__name__} is not one"
        )
    for begin in range(0, len(documents), TOKENIZE_BATCH):
        batch = documents[begin : begin + TOKENIZE_BATCH]
        pieces = [builder.split_instruction(instruction, doc)[1] for doc in batch]
        encoded = tokenizer(pieces, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        for doc, piece, ids, offsets in zip(batch, pieces, encoded["input_ids"], encoded["offset_mapping"]):
            shift = len(piece) - len(doc)  # whitespace moved in front of the document
            yield list(ids), [(max(0, a - shift), max(0, b - shift)) for a, b in offsets]


def _split_one(
    text: str, offsets: list[tuple[int, int]], chunking: str, size: int, overlap: int
) -> list[Span]:
    n = len(offsets)
    if n == 0:
        return []
    ends = [b for _, b in offsets]

    def ok(t: int) -> bool:  # a cut before token t keeps every character whole
        return t <= 0 or t >= n or offsets[t][0] >= offsets[t - 1][1]

    def snap_forward(t: int, limit: int) -> int:
        while t < limit and not ok(t):
            t += 1
        return t

    def windows(a: int, b: int, overlap: int) -> list[tuple[int, int]]:
        out, s = [], a
        while True:
            e = min(s + size, b)
            if e < b:  # back to a whole character within the window, else forward past it
                back = next((c for c in range(e, s, -1) if ok(c)), None)
                e = back if back is not None else snap_forward(e, b)
            out.append((s, e))
            if e >= b:
                return out
            s = snap_forward(max(e - overlap, s + 1), e) if overlap else e

    if chunking == "tokens":
        ranges = windows(0, n, overlap)
    else:
        cuts = sorted({snap_forward(bisect.bisect_right(ends, s), n) for s in sentence_starts(text)})
        bounds = [0, *(c for c in cuts if 0 < c < n), n]
        units = [w for a, b in itertools.pairwise(bounds) for w in windows(a, b, 0)]
        ranges = _group(units, size, overlap)

    def blank(t: int) -> bool:
        return not text[offsets[t][0] : offsets[t][1]].strip()

    spans = []
    for first, stop in ranges:
        while first < stop and blank(first):  # whitespace-only tokens at the edges: pooled by no chunk
            first += 1
        while stop > first and blank(stop - 1):
            stop -= 1
        if first == stop or (spans and spans[-1].first <= first and stop <= spans[-1].stop):
            continue  # only whitespace, or nothing the previous chunk does not already hold
        start, end = offsets[first][0], max(ends[first:stop])
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append(Span(start, end, first, stop))
    return spans


def _group(units: list[tuple[int, int]], size: int, overlap: int) -> list[tuple[int, int]]:
    """Greedily group consecutive token ranges up to ``size`` tokens; with ``overlap``, each group after
    the first starts with the previous group's trailing units that fit in ``overlap`` tokens."""
    groups, i = [], 0
    length = lambda k: units[k][1] - units[k][0]
    while i < len(units):
        j, total = i, 0
        while j < len(units) and (j == i or total + length(j) <= size):
            total += length(j)
            j += 1
        groups.append((units[i][0], units[j - 1][1]))
        if j >= len(units):
            break
        k, back = j, 0
        while overlap and k - 1 > i and back + length(k - 1) <= overlap:
            k -= 1
            back += length(k)
        while k < j and back + length(j) > size:  # the next group must reach a new unit
            back -= length(k)
            k += 1
        i = k
    return groups


def split_documents(
    builder: SequenceBuilder,
    documents: list[str],
    *,
    chunking: str = "sentences",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overlap: int = 0,
    instruction: str | None = None,
    name: Callable[[int], str] | None = None,
    window: int | None = None,
) -> list[ChunkedDocument]:
    """Split each document into chunks (tokenizer only, no model); raises naming a document (``name(i)``,
    default ``documents[i]``) that is empty, yields no chunk, or (with ``window``, the document tokens of
    one late forward) is longer than a window and has a chunk too long to get context within one."""
    chunk_size, overlap = check_chunk_options(chunking, chunk_size, overlap)
    name = name or (lambda i: f"documents[{i}]")
    check_documents(documents, name)
    out = []
    for i, (doc, (ids, offsets)) in enumerate(zip(documents, _tokens(builder, documents, instruction))):
        spans = _split_one(doc, offsets, chunking, chunk_size, overlap)
        if not spans:
            raise ValueError(f"{name(i)} yields no chunk: the tokenizer gives it no token outside whitespace")
        longest = max(s.stop - s.first for s in spans)
        if window is not None and len(ids) > window and longest >= window:
            raise ValueError(
                f"{name(i)} is {len(ids)} tokens, longer than one late forward ({window} document tokens), "
                f"and has a chunk of {longest} tokens, too long to get context in a window; lower chunk_size"
            )
        out.append(ChunkedDocument(doc, ids, spans))
    return out


# ------------------------------------------------------------------ late chunking
def late_windows(n: int, budget: int, longest_chunk: int) -> list[tuple[int, int]]:
    """Token windows ``[start, stop)`` of at most ``budget`` tokens covering ``n`` document tokens, each
    chunk of up to ``longest_chunk`` tokens inside at least one of them (see the module doc)."""
    if n <= budget:
        return [(0, n)]
    overlap = max(longest_chunk, budget // WINDOW_OVERLAP_FRACTION)
    if overlap >= budget:
        raise ValueError(
            f"a chunk of {longest_chunk} tokens leaves no room for context in a late forward of {budget} "
            "document tokens; lower chunk_size or raise max_length"
        )
    starts = list(range(0, n - budget, budget - overlap)) + [n - budget]
    return [(s, s + budget) for s in starts]


def assign_windows(spans: list[Span], windows: list[tuple[int, int]], n: int) -> list[int]:
    """For each chunk, the window it is pooled in: the one holding it with the most context on its
    less-covered side (a window edge at the document's edge counts as unlimited context)."""
    chosen = []
    for span in spans:
        best, best_score = -1, -1.0
        for w, (start, stop) in enumerate(windows):
            if start <= span.first and span.stop <= stop:
                left = span.first - start if start > 0 else float("inf")
                right = stop - span.stop if stop < n else float("inf")
                if min(left, right) > best_score:
                    best, best_score = w, min(left, right)
        if best < 0:  # late_windows guarantees a window; this would be a bug
            raise RuntimeError(f"no late-chunking window holds tokens [{span.first}, {span.stop})")
        chosen.append(best)
    return chosen


def late_pooled(
    encoder,
    documents: list[ChunkedDocument],
    *,
    instruction: str | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    show_progress_bar: bool | None = None,
) -> np.ndarray:
    """Raw (float32) late-chunking vectors of every chunk, documents in order, chunks in order."""
    builder = late_builder(encoder, max_length)
    front, budget = late_layout(builder, instruction)
    # One job per window: (document, window start, [(row of the output, first, stop)])
    jobs: list[tuple[int, int, list[tuple[int, int, int]]]] = []
    row = 0
    for d, doc in enumerate(documents):
        n = len(doc.ids)
        windows = late_windows(n, budget, max(s.stop - s.first for s in doc.spans))
        chosen = assign_windows(doc.spans, windows, n)
        per_window: list[list[tuple[int, int, int]]] = [[] for _ in windows]
        for k, (span, w) in enumerate(zip(doc.spans, chosen)):
            per_window[w].append((row + k, span.first, span.stop))
        jobs += [(d, windows[w][0], per_window[w]) for w in range(len(windows)) if per_window[w]]
        row += len(doc.spans)
    sequences = builder.build_from_ids(
        [documents[d].ids[start : start + budget] for d, start, _ in jobs], instruction
    )
    pooled = np.zeros((row, int(encoder.model.config.hidden_size)), dtype=np.float32)
    batches = encoder.sorted_batches(sequences, batch_size)
    if show_progress_bar is None:
        show_progress_bar = len(batches) > 1 and sys.stderr.isatty()
    with tqdm(total=len(jobs), desc="Late chunking", unit="window", disable=not show_progress_bar) as bar:
        for index in batches:
            batch = builder.collate([sequences[i] for i in index], "right").to(encoder.device)
            with torch.inference_mode():
                hidden = encoder.model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    use_cache=False,
                ).last_hidden_state
                for r, i in enumerate(index):
                    _, start, chunks = jobs[i]
                    for out_row, first, stop in chunks:
                        states = hidden[r, front + first - start : front + stop - start]
                        pooled[out_row] = states.float().mean(dim=0).cpu().numpy()
            bar.update(len(index))
    return encoder.project(pooled)  # the projection is linear: projecting span means = mean of projections


def late_layout(builder: SequenceBuilder, instruction: str | None) -> tuple[int, int]:
    """``(front, budget)`` of one late forward: where the document's tokens start in the sequence (after
    the prefix specials and the instruction), and how many fit."""
    head = builder.split_instruction(instruction, "")[0]
    front = len(builder.prefix) + (len(builder.token_ids([head])[0]) if head else 0)
    budget = builder.max_length - front - len(builder.suffix) - int(builder.append_eos)
    if budget < 1:
        raise ValueError(
            f"the instruction takes {front - len(builder.prefix)} tokens, leaving no room for the document "
            f"within max_length={builder.max_length}"
        )
    return front, budget


def late_builder(encoder, max_length: int | None) -> SequenceBuilder:
    """The sequence builder of one late forward: up to ``max_length`` tokens (default: the model's context)."""
    from decoder2vec.encoder_config import model_context

    context = model_context(encoder.model.config)
    if max_length is None:
        max_length = context or encoder.max_length
    max_length = check_positive_int("max_length", max_length)
    if context is not None and max_length > context:
        raise ValueError(f"max_length={max_length} exceeds the model's context of {context} tokens")
    return SequenceBuilder(encoder.tokenizer, max_length, encoder.append_eos)


# ------------------------------------------------------------------ the entry points
def embed_chunked(
    encoder,
    documents: list[str],
    *,
    chunking: str = "sentences",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overlap: int = 0,
    late: bool = True,
    instruction: str | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    output: OutputSpec | None = None,
    name: Callable[[int], str] | None = None,
    show_progress_bar: bool | None = None,
) -> tuple[list[ChunkedDocument], np.ndarray]:
    """Split and embed: the chunked documents and one output row per chunk (documents in order, chunks
    in order). Every check (options, documents, pooling, window) runs before any forward."""

    check_positive_int("batch_size", batch_size)
    if not isinstance(late, bool):
        raise TypeError(f"late must be True or False, got {late!r}")
    if instruction is not None and not isinstance(instruction, str):
        raise TypeError("instruction must be one string for all documents (or None)")
    output = output or OutputSpec()
    if late and encoder.pooling != "mean":
        raise ValueError(
            f"late chunking mean-pools each chunk's tokens; this encoder pools with {encoder.pooling!r}. "
            "Set encoder.pooling = 'mean', or embed the chunks naively (late=False)"
        )
    builder = late_builder(encoder, max_length) if late else encoder.builder
    chunked = split_documents(
        builder,
        documents,
        chunking=chunking,
        chunk_size=chunk_size,
        overlap=overlap,
        instruction=instruction,
        name=name,
        window=late_layout(builder, instruction)[1] if late else None,
    )
    if late:
        raw = late_pooled(
            encoder,
            chunked,
            instruction=instruction,
            max_length=builder.max_length,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
        )
        return chunked, finish(raw, output)
    texts = [text for doc in chunked for text in doc.chunk_texts()]
    rows = encoder.encode(
        texts,
        instruction=instruction,
        batch_size=batch_size,
        dimensions=output.dimensions,
        normalize=output.normalize,
        precision=output.precision,
        ranges=output.ranges,
        show_progress_bar=show_progress_bar,
    )
    return chunked, rows


def encode_chunks(
    encoder,
    documents: str | Iterable[str],
    *,
    output: OutputSpec | None = None,
    **options,
) -> list[Chunk] | list[list[Chunk]]:
    """:meth:`Encoder.encode_chunks`: per document, its chunks with their embeddings."""
    items, single = as_text_list(documents)
    chunked, rows = embed_chunked(encoder, items, output=output, **options)
    result, row = [], 0
    for doc in chunked:
        result.append(
            [Chunk(doc.text[s.start : s.end], s.start, s.end, rows[row + k]) for k, s in enumerate(doc.spans)]
        )
        row += len(doc.spans)
    return result[0] if single else result
