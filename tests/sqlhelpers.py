"""Small helpers the SQL tests share: run a call and capture the PostgreSQL error it raises."""

from __future__ import annotations

import json
from dataclasses import dataclass

import psycopg
import pytest
from psycopg.types.json import Jsonb

__all__ = ["Jsonb", "SqlError", "expect_error", "rows", "scalar", "reset_data"]


@dataclass
class SqlError:
    sqlstate: str
    message: str
    detail: str | None
    hint: str | None

    @property
    def detail_json(self):
        return json.loads(self.detail)


def expect_error(conn, sql: str, params=(), sqlstate: str | None = None) -> SqlError:
    """Run sql, which must fail; return the error (checking its SQLSTATE when given)."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql, params)
    diag = caught.value.diag
    error = SqlError(diag.sqlstate, diag.message_primary, diag.message_detail, diag.message_hint)
    if sqlstate is not None:
        assert error.sqlstate == sqlstate, error
    return error


def rows(conn, sql: str, params=()) -> list[tuple]:
    return conn.execute(sql, params).fetchall()


def scalar(conn, sql: str, params=()):
    return conn.execute(sql, params).fetchone()[0]


def reset_data(conn) -> None:
    """Empty every data table (definitions, state, log) but keep settings and identifier types."""
    conn.execute(
        "TRUNCATE passthrough.memberships, passthrough.events, passthrough.batches, "
        "passthrough.audience_size_deltas, passthrough.audiences, passthrough.external_audiences"
    )
