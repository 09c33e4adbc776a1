"""The GraphQL facade's errors: every one has ``message``, ``locations`` (possibly empty), ``path`` when it
belongs to a field, and ``extensions.classification`` (graphql-java's names, which the SDKs read) and
``extensions.code``. GraphQL errors are HTTP 200 (a statement past the read statement timeout too: ``TIMEOUT`` on
its field); the database unavailable is 503. Every error SQL raises is mapped by ``pyapp.errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from graphql import GraphQLError

from pyapp import errors

log = logging.getLogger("passthrough.graphql")

# graphql-java's error classifications: the SDKs require extensions.classification on every error.
INVALID_SYNTAX = "InvalidSyntax"
VALIDATION_ERROR = "ValidationError"
DATA_FETCHING = "DataFetchingException"
REQUEST_ERROR = "RequestError"  # refused before any GraphQL work: auth, body, size



class FacadeError(Exception):
    """An error a resolver reports; graphql-core locates it and keeps its ``extensions``."""

    def __init__(self, message: str, code: str, *, classification: str = DATA_FETCHING, status: int = 200) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = {"classification": classification, "code": code}
        self.status = status


# The facade's own checks of GraphQL arguments (how many identifiers customer() was given, whether a cursor is one
# it issued) are about the GraphQL shape, not membership, so they use GraphQL codes of their own and carry no
# SQLSTATE. The codes are the ones ODP answers with: the SDKs read INVALID_IDENTIFIER_EXCEPTION for a missing user.
INVALID_IDENTIFIER = "INVALID_IDENTIFIER_EXCEPTION"
INVALID_ARGUMENT = "INVALID_ARGUMENT"


def argument_error(message: str, code: str = INVALID_ARGUMENT) -> FacadeError:
    """An argument the facade itself refuses, as an error of its field."""
    return FacadeError(message, code)


def database_error(exc: Exception) -> FacadeError:
    report = errors.report(exc)
    coded = errors.graphql_code(report.sqlstate) if report.sqlstate else None
    if coded is not None:  # a code of its own, a statement timeout (TIMEOUT) included: an error of the field
        error = FacadeError(report.message, coded)
    elif report.status == 503:  # the database is unavailable: the whole answer is 503, so clients retry
        error = FacadeError(report.message, report.code.upper(), status=503)
    elif report.status >= 500:
        log.error("GraphQL resolver failed", exc_info=exc)
        error = FacadeError(report.message, report.code.upper())
    else:
        error = FacadeError(report.message, report.code.upper())
    if report.sqlstate:
        error.extensions["sqlstate"] = report.sqlstate
    return error


def error_json(message: str, classification: str, code: str, *, locations: Sequence[Any] = ()) -> dict[str, Any]:
    return {
        "message": message,
        "locations": [{"line": loc.line, "column": loc.column} for loc in locations],
        "extensions": {"classification": classification, "code": code},
    }


def format_error(error: GraphQLError) -> tuple[dict[str, Any], int]:
    """The JSON of one execution error and the HTTP status it calls for (200, or 503)."""
    original = error.original_error
    status = 200
    if isinstance(original, FacadeError):
        extensions = dict(original.extensions)
        message = original.message
        status = original.status
    elif error.path is None:
        # refused before any field was resolved: a variable of the wrong type, an unknown or
        # ambiguous operation name
        extensions = {"classification": VALIDATION_ERROR, "code": "BAD_USER_INPUT"}
        message = error.message
    else:
        log.error("GraphQL field %s failed", error.path, exc_info=original or error)
        extensions = {"classification": DATA_FETCHING, "code": "INTERNAL_ERROR"}
        message = errors.INTERNAL_MESSAGE
    formatted: dict[str, Any] = {
        "message": message,
        "locations": [{"line": loc.line, "column": loc.column} for loc in error.locations or ()],
    }
    if error.path is not None:
        formatted["path"] = list(error.path)
    formatted["extensions"] = extensions
    return formatted, status
