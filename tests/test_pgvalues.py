"""pyapp/pgvalues.py: what PostgreSQL's numeric and text hold, checked against the server itself."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from pyapp.pgvalues import numeric_holds, text_holds

# Around both of numeric's limits (131072 digits before the point, 16383 after), zero, signs and exponents.
NUMBERS = [
    "0", "-0", "1700000000.123456", "1e131071", "9.99e131071", "-9.99e131071", "1e131072", "-1e131072",
    "99e131070", "99e131071", "1e-16383", "123e-16383", "1.5e-16383", "1e-16384", "0e-16383", "0e-16384",
    "0e999999999", "1e999999999", "1e-999999999", "1." + "0" * 16383, "1." + "0" * 16384, "1" + "0" * 131071,
    "1" + "0" * 131072,
]


def server_holds(conn: psycopg.Connection, text: str) -> bool:
    try:
        with conn.transaction():
            conn.execute("SELECT %s::text::numeric", (text,))
        return True
    except psycopg.errors.NumericValueOutOfRange:
        return False


@pytest.mark.parametrize("text", NUMBERS, ids=lambda t: t if len(t) < 30 else f"{t[:6]}..({len(t)} chars)")
def test_numeric_holds_what_the_server_accepts(conn, text):
    assert numeric_holds(Decimal(text)) == server_holds(conn, text)


def test_no_infinity_or_nan():
    for text in ("Infinity", "-Infinity", "NaN", "sNaN"):
        assert not numeric_holds(Decimal(text))


def test_text_holds_anything_but_nul(conn):
    for value in ("", "x", "é\u2028", "\ud7ff", "a\x01b"):
        assert text_holds(value)
        assert conn.execute("SELECT %s::text", (value,)).fetchone()[0] == value
    assert not text_holds("a\x00b")
    with pytest.raises(psycopg.DataError):  # what a transport refuses first
        conn.execute("SELECT %s::text", ("a\x00b",))
