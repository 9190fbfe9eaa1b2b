"""Parsing request bodies: hostile JSON becomes a 422 that names the problem, never a 500."""

from __future__ import annotations

import pytest

from decoder2vec.serving.protocol import APIError, parse_request

DEEP = 100_000


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"input": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        b'{"input": "hi", "user": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}",
    ],
    ids=["top-level", "input", "another-field"],
)
def test_deeply_nested_json_is_a_422_naming_the_nesting(body):
    with pytest.raises(APIError) as info:
        parse_request(body)
    assert info.value.status == 422 and "nests JSON arrays or objects too deeply" in info.value.message


def test_nesting_the_parser_accepts_is_still_a_named_422():
    with pytest.raises(APIError) as info:
        parse_request(b'{"input": ' + b"[" * 200 + b"]" * 200 + b"}")
    assert info.value.status == 422 and info.value.param == "input"
