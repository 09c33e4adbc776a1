"""pyapp/pgvalues.py: what PostgreSQL's numeric and text hold, checked against the server itself."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from pyapp.pgvalues import held_text, numeric_holds, text_holds, undecoded_bytes

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


def server_holds_text(conn: psycopg.Connection, value: str) -> bool:
    """Whether the server takes the value's bytes as COPY would send them (surrogatepass) as UTF-8 text."""
    try:
        with conn.transaction():
            got = conn.execute("SELECT convert_from(%s::bytea, 'UTF8')",
                               (value.encode("utf-8", "surrogatepass"),)).fetchone()[0]
        assert got == value
        return True
    except psycopg.errors.CharacterNotInRepertoire:  # 22021: a NUL, or bytes that are not UTF-8
        return False


@pytest.mark.parametrize("value", ["", "x", "é\u2028", "\ud7ff\ue000", "a\x01b", "\U0001f600", "a\x00b", "\x00",
                                   "u\udcfe2", "\udcff", "\ud800", "ok\udfff"])
def test_text_holds_what_the_server_accepts(conn, value):
    assert text_holds(value) == server_holds_text(conn, value)


def test_held_text_says_what_was_there():
    """A NUL as its JSON escape, a byte read with surrogateescape as \\xNN, another lone surrogate as \\uNNNN."""
    assert held_text("a\x00b") == "a\\u0000b"
    assert held_text("u\udcfe2\udcff") == "u\\xfe2\\xff"
    assert held_text("é\ud800") == "é\\ud800"
    assert held_text("plain é") == "plain é"
    assert b"u\xfe2\xff".decode("utf-8", "surrogateescape") == "u\udcfe2\udcff"  # the reading this undoes
    assert undecoded_bytes("u\udcfe2\udcff\ud800") == b"\xfe\xff"
