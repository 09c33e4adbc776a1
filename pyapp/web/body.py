"""Reading a request body: content type, size limits, gzip, then parsing.

The limits apply before anything is parsed: a body longer than ``max_bytes`` (by Content-Length,
or counted as it arrives) is refused with 413 without being read in full, and a gzip body is
decompressed only up to ``max_bytes``, so a small body that inflates enormously (a gzip bomb) is
refused the same way. ``read_json_body`` reads a JSON body whole; ``stream_at_most`` hands a large
body (a snapshot upload, pyapp/web/snapshots.py) over chunk by chunk under the same limit.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request

from pyapp.web.responses import ApiError

JSON_MEDIA_TYPE = "application/json"


@dataclass(frozen=True)
class JsonBody:
    value: Any  # the parsed JSON
    text: str  # the JSON text as received (decompressed), for passing on to PostgreSQL unchanged


async def read_json_body(request: Request, *, max_bytes: int) -> JsonBody:
    _require_json_content_type(request.headers.get("content-type"))
    gzipped = content_encoding_is_gzip(request.headers.get("content-encoding"))
    raw = await _read_at_most(request, max_bytes)
    if gzipped:
        raw = _gunzip_at_most(raw, max_bytes)
    if not raw.strip():
        raise ApiError(400, "empty_body", "the request body is empty; send JSON")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"the request body is not valid JSON: {exc}") from None
    return JsonBody(value, raw.decode("utf-8"))  # orjson accepted it, so it is UTF-8


def _require_json_content_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        got = f"got {content_type!r}" if content_type else "none was given"
        raise ApiError(400, "unsupported_media_type", f"Content-Type must be {JSON_MEDIA_TYPE}; {got}")


def content_encoding_is_gzip(content_encoding: str | None) -> bool:
    """True for gzip, False for none (identity); 400 for any other Content-Encoding."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return True
    if encoding == "identity":
        return False
    raise ApiError(
        400, "unsupported_content_encoding", f"Content-Encoding must be gzip or absent; got {content_encoding!r}"
    )


async def stream_at_most(request: Request, max_bytes: int) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; 413 once they pass ``max_bytes`` (before reading any when
    Content-Length says so)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise too_large(f"the request body is {int(declared)} bytes", max_bytes)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large("the request body is larger than that", max_bytes)
        yield chunk


async def _read_at_most(request: Request, max_bytes: int) -> bytes:
    return b"".join([chunk async for chunk in stream_at_most(request, max_bytes)])


def _gunzip_at_most(data: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and trailer required
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise ApiError(400, "malformed_gzip", f"the request body is not valid gzip: {exc}") from None
    if len(out) > max_bytes:
        raise too_large("the decompressed request body is larger than that", max_bytes)
    if not inflater.eof:
        raise ApiError(400, "malformed_gzip", "the gzip request body is truncated")
    if inflater.unused_data:
        raise ApiError(400, "malformed_gzip", "the request body has data after the end of its gzip stream")
    return out


def too_large(what: str, max_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request bodies may be at most {max_bytes} bytes; {what}")
