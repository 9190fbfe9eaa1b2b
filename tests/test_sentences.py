"""The one sentence splitter: its offsets and its sentences agree; the chunker's line breaks are its option."""

from decoder2vec.sentences import sentence_starts, split_sentences

TEXT = 'Mr. Smith met J. Doe.  He left!\n"Why?" (Nobody knew.) e.g. this\nnew line. 1990 came, etc. Then it ended.'


def test_offsets_and_sentences_agree():
    starts = sentence_starts(TEXT)
    pieces = [TEXT[a:b].strip() for a, b in zip([0, *starts], [*starts, len(TEXT)])]
    assert (
        pieces
        == split_sentences(TEXT, min_words=0)
        == [
            "Mr. Smith met J. Doe.",
            "He left!",
            '"Why?" (Nobody knew.) e.g. this\nnew line.',  # (no sentence ends inside a quote)
            "1990 came, etc.",
            "Then it ended.",
        ]
    )
    assert split_sentences(TEXT, min_words=3) == [
        "Mr. Smith met J. Doe.",
        '"Why?" (Nobody knew.) e.g. this\nnew line.',
        "1990 came, etc.",
        "Then it ended.",
    ]


def test_line_breaks_are_boundaries_only_when_asked():
    with_breaks = sentence_starts(TEXT, line_breaks=True)
    assert set(sentence_starts(TEXT)) < set(with_breaks)
    assert TEXT.index("new line") in with_breaks and TEXT.index("new line") not in sentence_starts(TEXT)
    assert sentence_starts("A line.\n\n") == sentence_starts("A line.\n\n", line_breaks=True) == []


def test_whitespace_after_an_abbreviation_is_one_space():
    assert split_sentences("Dr.\n\tSmith arrived late. Then he left early.", min_words=1) == [
        "Dr. Smith arrived late.",
        "Then he left early.",
    ]
