"""JSON responses (orjson) and the one error shape every endpoint answers with.

Success bodies are whatever the endpoint returns, always ``application/json``. Errors look like
ODP's::

    {"title": "Bad Request", "status": 400, "timestamp": "2026-01-02T03:04:05.678Z",
     "detail": {"code": "invalid_events", "message": "...", "sqlstate": "PT001",
                "invalids": [{"event": 0, "message": "...", "problems": ["..."]}]}}

``detail.code`` and ``detail.message`` are always present; ``sqlstate`` (errors raised by SQL),
``field``, ``hint`` and ``invalids`` (a refused batch of events, or the rows of a refused snapshot:
``{"row": <line>, "message": ..., "problems": [...]}``) only when they apply.
"""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import Response

from pyapp.errors import ErrorReport

# How long a client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = 1


def json_bytes(content: Any) -> bytes:
    """The API's JSON encoding of ``content``: orjson, UTC as Z, and a trailing newline, which keeps curl's
    output off the shell prompt."""
    return orjson.dumps(content, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


class ApiError(Exception):
    """An error the HTTP layer itself detects (no key, malformed JSON, body too large, ...)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.report = ErrorReport(status, code, message, field=field)


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as ODP writes it: 2022-06-30T20:59:52.046Z."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")




def accepted_response(**extra: Any) -> JSONResponse:
    """202, the answer ODP gives to events; extra fields (counts) follow the standard ones."""
    return JSONResponse({"title": "Accepted", "status": 202, "timestamp": utc_timestamp(), **extra}, status_code=202)


def error_response(report: ErrorReport, headers: dict[str, str] | None = None) -> JSONResponse:
    detail: dict[str, Any] = {"code": report.code, "message": report.message}
    for key in ("sqlstate", "field", "hint", "invalids"):
        value = getattr(report, key)
        if value is not None:
            detail[key] = value
    headers = dict(headers or {})
    if report.retryable:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    body = {"title": _title(report.status), "status": report.status, "timestamp": utc_timestamp(), "detail": detail}
    return JSONResponse(body, status_code=report.status, headers=headers)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
