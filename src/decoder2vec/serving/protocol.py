"""The OpenAI embeddings wire format: request model, response rendering and the error shape."""

from __future__ import annotations

import base64
import json
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError


class APIError(Exception):
    """An error answered in the OpenAI shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``; strict types so ``["a", 1]`` or ``[1, "2"]`` is rejected, not coerced.

    Unknown fields are ignored, as the OpenAI-compatible servers (vLLM, TEI) do.
    """

    model_config = ConfigDict(extra="ignore")

    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None
    # Cohere's convention for compact vectors (also in TEI-style clients): one or more of float, int8,
    # uint8, binary, ubinary; each item then carries them all under "embeddings" (see render_embeddings).
    embedding_types: list[StrictStr] | None = None
    user: StrictStr | None = None
    # decoder2vec extensions: an instruction attended to but not pooled, and TEI's truncate switch.
    instruction: StrictStr | None = None
    truncate: bool = Field(default=True, strict=True)

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list of texts or a list of token-id lists."""
        if isinstance(self.input, str):
            return [self.input]
        if self.input and isinstance(self.input[0], int):
            return [self.input]
        return list(self.input)


def parse_request(body: bytes) -> EmbeddingRequest:
    """Validate a JSON body, turning pydantic's report into a 422 that names the first problem."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(422, f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # the parser recurses once per nesting level
        raise APIError(422, "the body nests JSON arrays or objects too deeply to parse") from None
    if not isinstance(data, dict):
        raise APIError(422, "the body must be a JSON object")
    if "input" in data:
        check_input_shape(data["input"])
    try:
        return EmbeddingRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None


def check_input_shape(value) -> None:
    """Name the offending item of ``input`` (pydantic's union report lists every member's failure)."""
    shapes = "a string, a list of strings, a list of token ids or a list of lists of token ids"
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise APIError(422, f"input must be {shapes}, not {_kind(value)}", param="input")
    if not value:
        raise APIError(422, "input is an empty list; there is nothing to embed", param="input")
    if isinstance(value[0], list):
        for i, item in enumerate(value):
            if not isinstance(item, list) or not all(_is_int(x) for x in item):
                raise APIError(422, f"input[{i}] must be a list of token ids (integers)", param="input")
        return
    kind = str if isinstance(value[0], str) else int if _is_int(value[0]) else None
    for i, item in enumerate(value):
        if kind is None or not (isinstance(item, str) if kind is str else _is_int(item)):
            expected = "a string" if kind is str else "a token id (integer)" if kind is int else shapes
            raise APIError(422, f"input[{i}] is {_kind(item)}; expected {expected}", param="input")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}"
    )


def validation_error(errors: list[dict] | tuple) -> APIError:
    """One 422 for FastAPI's or pydantic's error list; ``param`` is the field of the first error."""
    if not errors:
        return APIError(422, "invalid request body")
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    # A union reports each member's failure; the message of the first one is clear enough.
    where = ".".join(part for part in loc if not part.startswith(("str", "list[", "function-"))) or "body"
    param = where.split(".")[0] if where != "body" else None
    return APIError(422, f"{where}: {first.get('msg', 'invalid value')}", param=param)


def _vectors(rows: np.ndarray, encoding_format: str) -> list:
    """Rows as JSON lists (float32 values as Python floats round-trip exactly; ints stay ints), or base64 of
    their little-endian bytes (float32 as the OpenAI client reads it; int8/uint8 one byte a value)."""
    if rows.dtype == np.float32:
        rows = np.ascontiguousarray(rows, dtype="<f4")
    if encoding_format == "base64":
        return [base64.b64encode(np.ascontiguousarray(row).tobytes()).decode("ascii") for row in rows]
    return rows.tolist()


def render_embeddings(
    rows: np.ndarray | dict[str, np.ndarray], encoding_format: str, model: str, prompt_tokens: int
) -> bytes:
    """The response body. ``rows`` is one float32 array (OpenAI's shape), or, for ``embedding_types``, a
    mapping type -> array: then each item's ``embedding`` is the first type's vector (so OpenAI clients
    still read it) and ``embeddings`` holds every type's, keyed by type as Cohere's API does."""
    if isinstance(rows, dict):
        per_type = {kind: _vectors(array, encoding_format) for kind, array in rows.items()}
        first = next(iter(per_type.values()))
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": first[i],
                "embeddings": {kind: vectors[i] for kind, vectors in per_type.items()},
            }
            for i in range(len(first))
        ]
    else:
        vectors = _vectors(np.asarray(rows, dtype=np.float32), encoding_format)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    payload = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return json.dumps(payload, separators=(",", ":")).encode()
