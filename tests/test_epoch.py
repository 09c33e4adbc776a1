"""passthrough.instant_from_seconds reads seconds since the Unix epoch (the `at` of GraphQL, member exports and
`passthrough export`) as passthrough._ts_from_seconds reads an event's ts: rounded to the microsecond, half away
from zero. Python sends the number as exact text; SQL converts it."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

# (seconds, the instant), worked out by hand
CASES = [
    ("1700000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ("1700000000.0000005", datetime(2023, 11, 14, 22, 13, 20, 1, tzinfo=UTC)),
    ("1700000000.0000004999", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    # a fraction longer than Python Decimal's 28 digits, just below a half: it must not round up twice
    ("1700000000.0000014999999999999999999999", datetime(2023, 11, 14, 22, 13, 20, 1, tzinfo=UTC)),
    ("1700000000.9999995", datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC)),
    ("1.7000000000000005E9", datetime(2023, 11, 14, 22, 13, 20, 1, tzinfo=UTC)),
    ("-0.0000005", datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("-0.0000004", datetime(1970, 1, 1, tzinfo=UTC)),
]


@pytest.mark.parametrize("seconds, instant", CASES, ids=[c[0] for c in CASES])
def test_seconds_round_to_the_microsecond_half_away_from_zero(seconds, instant, conn):
    assert conn.execute("SELECT passthrough.instant_from_seconds(%s::numeric, 'at')", (seconds,)).fetchone()[0] == instant
    assert conn.execute("SELECT passthrough._ts_from_seconds(%s::numeric)", (seconds,)).fetchone()[0] == instant


@pytest.mark.parametrize("seconds", ["1e30", "-1e30", "1e13", "-1e12", "NaN", "Infinity", "-Infinity"])
def test_seconds_no_timestamp_holds_are_pt010_naming_the_field(seconds, conn):
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT passthrough.instant_from_seconds(%s::numeric, 'from')", (seconds,))
    assert caught.value.diag.sqlstate == "PT010"
    assert caught.value.diag.message_detail == "field: from"
    assert caught.value.diag.message_primary.startswith("from must be seconds since the Unix epoch, got ")


def test_null_is_null(conn):
    assert conn.execute("SELECT passthrough.instant_from_seconds(NULL)").fetchone()[0] is None
