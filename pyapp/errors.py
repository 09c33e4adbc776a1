"""The one mapping from database errors to what the APIs answer.

Domain errors are raised in SQL with a SQLSTATE of class PT (docs/errors.md lists them; a test
checks that every row of that table is mapped here, identically). This module turns an exception
from psycopg or psycopg_pool into an ``ErrorReport``: an HTTP status, a stable code, the message,
and the structured parts SQL put in DETAIL and HINT. It knows nothing about HTTP frameworks, so the
HTTP endpoints and the GraphQL facade (``graphql_code``) share it.

Transient failures (the database cannot be reached, a pool timeout, a serialization failure, a
deadlock, the server shutting down) become 503 so that clients retry. A statement PostgreSQL cancelled
(57014: an API read past its statement timeout, pyapp/web/database.py) is 503 too, but with a code of its
own (``statement_timeout``; GraphQL ``TIMEOUT``): asking again for the same may meet the same limit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = [
    "DOMAIN_ERRORS",
    "DomainError",
    "ErrorReport",
    "TRANSIENT_SQLSTATES",
    "graphql_code",
    "http_status",
    "is_transient",
    "describe",
    "report",
    "sql_error_fields",
]


@dataclass(frozen=True)
class DomainError:
    """One row of the table in docs/errors.md."""

    sqlstate: str
    name: str
    http_status: int
    graphql_code: str | None = None


def _by_sqlstate(*rows: DomainError) -> dict[str, DomainError]:
    table: dict[str, DomainError] = {}
    for row in rows:
        if row.sqlstate in table:
            raise ValueError(f"{row.sqlstate} is mapped twice")
        table[row.sqlstate] = row
    return table


DOMAIN_ERRORS: dict[str, DomainError] = _by_sqlstate(
    DomainError("PT001", "invalid_events", 400),
    DomainError("PT002", "passthrough_disabled", 403),
    DomainError("PT003", "invalid_identifier", 400, "INVALID_IDENTIFIER_EXCEPTION"),
    DomainError("PT004", "audience_conflict", 409),
    DomainError("PT005", "audience_exists", 409),
    DomainError("PT006", "audience_not_found", 404, "NOT_FOUND"),
    DomainError("PT007", "invalid_audience", 400),
    DomainError("PT008", "identifier_type_not_found", 404),
    DomainError("PT009", "identifier_type_in_use", 409),
    DomainError("PT010", "invalid_argument", 400, "INVALID_ARGUMENT"),
    DomainError("PT011", "api_key_exists", 409),
    DomainError("PT012", "api_key_not_found", 404),
    DomainError("PT020", "invalid_rows", 400),
    DomainError("PT021", "no_staging_table", 400),
    DomainError("PT022", "empty_snapshot", 422),
    DomainError("PT023", "snapshot_disqualifies_too_many", 422),
    DomainError("PT024", "snapshot_of_another_audience", 400),
    DomainError("PT030", "invalid_cursor", 400),
    DomainError("PT031", "history_pruned", 410, "HISTORY_PRUNED"),
    DomainError("PT032", "cursor_pruned", 410),
    DomainError("PT033", "webhook_exists", 409),
    DomainError("PT034", "webhook_not_found", 404),
    DomainError("PT035", "invalid_webhook", 400),
    DomainError("PT036", "public_key_passthrough_events", 403),
    DomainError("PT037", "invalid_api_key", 401),
    DomainError("PT038", "insufficient_scope", 403),
    DomainError("PT040", "citus_not_ready", 409),
)

# PostgreSQL's query_canceled: a statement that ran past statement_timeout (or that an operator cancelled)
STATEMENT_TIMEOUT = DomainError("57014", "statement_timeout", 503, "TIMEOUT")
TIMEOUT_MESSAGE = ("the statement was cancelled: it ran longer than the server allows (API reads: "
                   "--read-statement-timeout), or an operator cancelled it; nothing was stored. Ask for less "
                   "(fewer sizes as of a past instant, a shorter window, a smaller page), or retry later")

# PostgreSQL's own errors that mean "retry later": the request may succeed as sent.
TRANSIENT_SQLSTATES: dict[str, str] = {
    "40001": "serialization_failure",
    "40P01": "deadlock_detected",
    "53300": "too_many_connections",
    "57P01": "admin_shutdown",
    "57P02": "crash_shutdown",
    "57P03": "cannot_connect_now",
}
TRANSIENT_SQLSTATE_CLASSES = ("08",)  # connection exceptions

# PostgreSQL's own errors for input it cannot store, e.g. "\u0000" inside JSON text (valid JSON,
# refused by jsonb): the request is at fault and resending it will not help.
BAD_INPUT_SQLSTATES: dict[str, str] = {
    "22P02": "invalid_text_representation",
    "22P05": "untranslatable_character",
    "22021": "character_not_in_repertoire",
    "22003": "numeric_value_out_of_range",  # a number numeric cannot hold that no transport check caught
}

# Errors whose DETAIL is JSON [{"event" | "row", "message", "problems"}]: the invalid events (PT001) or rows
# (PT020, a refused snapshot or bulk load; "row" is the staged row_no, the line of an uploaded CSV).
INVALIDS_IN_DETAIL = frozenset({"PT001", "PT020"})

UNAVAILABLE_MESSAGE = "the database is unavailable or busy; nothing was stored, retry later"
INTERNAL_MESSAGE = "internal error; nothing was stored"

_FIELD = re.compile(r"^field: ([A-Za-z0-9_.\-]+)")


@dataclass(frozen=True)
class ErrorReport:
    """What an API answers for an error, independent of the transport."""

    status: int
    code: str  # a stable snake_case name, e.g. "audience_conflict"
    message: str
    sqlstate: str | None = None
    field: str | None = None
    hint: str | None = None
    # PT001: every invalid event ({"event": index, ...}); PT020: the first 100 invalid rows ({"row": row_no, ...})
    invalids: list[dict[str, Any]] | None = None

    @property
    def retryable(self) -> bool:
        return self.status == 503


def http_status(sqlstate: str) -> int:
    """The HTTP status for an error's SQLSTATE: domain errors as documented, transient ones 503, else 500."""
    domain = DOMAIN_ERRORS.get(sqlstate)
    if domain is not None:
        return domain.http_status
    if sqlstate == STATEMENT_TIMEOUT.sqlstate:
        return STATEMENT_TIMEOUT.http_status
    if _is_transient_sqlstate(sqlstate):
        return 503
    if sqlstate in BAD_INPUT_SQLSTATES:
        return 400
    return 500


def graphql_code(sqlstate: str) -> str | None:
    """The GraphQL ``extensions.code`` for a domain error's SQLSTATE (or a statement timeout's), or None when
    docs/errors.md gives none."""
    domain = STATEMENT_TIMEOUT if sqlstate == STATEMENT_TIMEOUT.sqlstate else DOMAIN_ERRORS.get(sqlstate)
    return domain.graphql_code if domain is not None else None


def is_transient(exc: BaseException) -> bool:
    """Whether the failure is worth retrying: the database unreachable, busy or restarting."""
    if not isinstance(exc, psycopg.Error):
        return False
    sqlstate = exc.sqlstate
    if sqlstate is None:
        # no SQLSTATE: the connection failed or was lost, or the pool timed out / is closed
        # (psycopg_pool's PoolTimeout, PoolClosed and TooManyRequests are OperationalErrors)
        return isinstance(exc, psycopg.OperationalError)
    return _is_transient_sqlstate(sqlstate)


def sql_error_fields(exc: BaseException) -> tuple[str | None, str, str | None, str | None]:
    """(sqlstate, message, detail, hint) of a psycopg or pg8000 error: the one reader of PostgreSQL's error
    fields (the message is the exception's text when the server sent none)."""
    diag = getattr(exc, "diag", None)
    if diag is not None:  # psycopg
        return diag.sqlstate, diag.message_primary or str(exc), diag.message_detail, diag.message_hint
    fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}  # pg8000
    return fields.get("C"), fields.get("M", str(exc)), fields.get("D"), fields.get("H")


def describe(exc: BaseException) -> str:
    """A database error for a person at a terminal: the message, then its detail and hint on lines of their own."""
    _, message, detail, hint = sql_error_fields(exc)
    lines = [message.strip()]
    lines += [f"{label}: {value}" for label, value in (("detail", detail), ("hint", hint)) if value]
    return "\n".join(lines)


def report(exc: BaseException) -> ErrorReport:
    """The ErrorReport for an exception from the database layer (or any other: 500)."""
    if is_transient(exc):
        return ErrorReport(503, "database_unavailable", UNAVAILABLE_MESSAGE, sqlstate=_sqlstate(exc))
    sqlstate = _sqlstate(exc)
    if sqlstate is None and isinstance(exc, psycopg.DataError):
        # psycopg refused a parameter before sending it: text with a NUL character ("\u0000")
        return ErrorReport(400, "invalid_input", str(exc) or "invalid input")
    if sqlstate is None or not isinstance(exc, psycopg.Error):
        return ErrorReport(500, "internal_error", INTERNAL_MESSAGE)
    if sqlstate == STATEMENT_TIMEOUT.sqlstate:
        return ErrorReport(STATEMENT_TIMEOUT.http_status, STATEMENT_TIMEOUT.name, TIMEOUT_MESSAGE, sqlstate=sqlstate)
    _, message, detail, hint = sql_error_fields(exc)
    primary = exc.diag.message_primary and message  # the server's message, or None
    domain = DOMAIN_ERRORS.get(sqlstate)
    if domain is not None:
        return ErrorReport(
            domain.http_status,
            domain.name,
            primary or domain.name,
            sqlstate=sqlstate,
            field=_field(detail),
            hint=hint,
            invalids=_invalids(detail) if sqlstate in INVALIDS_IN_DETAIL else None,
        )
    if sqlstate in BAD_INPUT_SQLSTATES:
        message = primary or "invalid input"
        where = (exc.diag.context or "").split("\n")[0]
        if where.startswith("COPY "):  # the staged row, e.g. 'COPY passthrough_load, line 2, column ts: "1e9..."'
            message = f"{message} ({where[:200]})"
        return ErrorReport(400, "invalid_input", message, sqlstate=sqlstate)
    return ErrorReport(500, "internal_error", INTERNAL_MESSAGE, sqlstate=sqlstate)


def _is_transient_sqlstate(sqlstate: str) -> bool:
    return sqlstate in TRANSIENT_SQLSTATES or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES


def _sqlstate(exc: BaseException) -> str | None:
    return exc.sqlstate if isinstance(exc, psycopg.Error) else None


def _field(detail: str | None) -> str | None:
    match = _FIELD.match(detail or "")
    return match.group(1) if match else None


def _invalids(detail: str | None) -> list[dict[str, Any]]:
    """PT001's or PT020's DETAIL: JSON [{"event" | "row", "message", "problems"}] (PT001's is empty when the
    batch was not an array)."""
    try:
        parsed = json.loads(detail or "[]")
    except ValueError:
        return []
    return parsed if isinstance(parsed, list) else []
