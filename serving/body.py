"""Strict JSON request bodies: bounded size and depth, no NaN/Infinity, no duplicate keys.

Every failure is a :class:`BadRequest` with a machine-readable ``reason`` and the
``field`` it concerns, answered 4xx; nothing here can raise a 5xx.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["MAX_BODY_BYTES", "MAX_DEPTH", "BadRequest", "parse_model", "read_json"]

MAX_BODY_BYTES = 1 << 20
MAX_DEPTH = 32

M = TypeVar("M", bound=BaseModel)
_UNREAD = object()


class BadRequest(Exception):
    """A request the service refuses to read; becomes a 4xx JSON answer."""

    def __init__(self, reason: str, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field
        self.status = status

    def response(self) -> JSONResponse:
        """The JSON error body: reason code, field and a plain-words message."""
        body: dict[str, str | None] = {
            "error": self.reason,
            "field": self.field,
            "message": self.message,
        }
        return JSONResponse(body, status_code=self.status)


def _no_constant(name: str) -> float:
    raise BadRequest("invalid-number", f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest("invalid-number", f"number {text[:40]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequest("duplicate-key", f"key {key[:64]!r} appears twice", field=key[:64])
        result[key] = value
    return result


def _check_depth(value: Any) -> None:
    """Refuse values nested deeper than :data:`MAX_DEPTH` (the root is level 1), walking
    one level of containers at a time; scalars are never queued (most of a bundle)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 1
    while level:
        deeper: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            if children and depth >= MAX_DEPTH:
                raise BadRequest("too-deep", f"JSON nested deeper than {MAX_DEPTH} levels")
            deeper.extend([child for child in children if isinstance(child, dict | list)])
        level, depth = deeper, depth + 1


def loads_strict(data: bytes) -> Any:
    """Parse JSON bytes refusing NaN, Infinity, overflowing numbers and duplicate keys.

    Raises:
        BadRequest: the bytes are not strict JSON or nest deeper than :data:`MAX_DEPTH`.
    """
    try:
        value = json.loads(
            data,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except BadRequest:
        raise
    except RecursionError as exc:
        raise BadRequest("too-deep", f"JSON nested deeper than {MAX_DEPTH} levels") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("invalid-json", f"body is not valid JSON: {str(exc)[:120]}") from exc
    _check_depth(value)
    return value


async def read_json(request: Request, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """Read and strictly parse a JSON body of at most ``max_bytes``.

    The parsed body is kept on the request: a second read (the handler, after an
    authenticator that needed the body) returns the same value.

    Raises:
        BadRequest: 413 when too large, 415 when not JSON, else 400.
    """
    kept = getattr(request.state, "json_body", _UNREAD)
    if kept is not _UNREAD:
        return kept
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() not in {
        "application/json",
        "application/fhir+json",
    }:
        raise BadRequest(
            "unsupported-media-type", "send Content-Type: application/json", status=415
        )
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise BadRequest("too-large", f"body larger than {max_bytes} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest("too-large", f"body larger than {max_bytes} bytes", status=413)
        chunks.append(chunk)
    request.state.json_body = parsed = loads_strict(b"".join(chunks))
    return parsed


def parse_model(model: type[M], data: Any) -> M:
    """Validate parsed JSON into ``model``; the error names the first bad field.

    Raises:
        BadRequest: 400 ``invalid-field`` with the dotted field path.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(body)"
        raise BadRequest("invalid-field", f"{field}: {first['msg']}", field=field) from exc
