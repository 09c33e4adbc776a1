"""What PostgreSQL's types can hold, for the transports that hand it values.

A value that ``numeric`` or ``text`` cannot hold fails the whole statement that carries it (a COPY, a parameter)
with PostgreSQL's own error, which names neither the field nor the row, before any rule of ours could look at
it. So each transport refuses such a value first and names the field: a bulk load sets the row aside (or names
its line), a query parameter or a command-line option gets its own message. The rules about what a value means
(a ts's range, a share's bounds) stay SQL's.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

# PostgreSQL's numeric: up to 131072 digits before the decimal point and up to 16383 after it (its documented
# limits; input beyond them is 22003 "value overflows numeric format").
NUMERIC_INTEGER_DIGITS = 131072
NUMERIC_FRACTION_DIGITS = 16383


def numeric_holds(value: Decimal) -> bool:
    """Whether PostgreSQL's numeric holds ``value`` (a finite number within its digits)."""
    if not value.is_finite():
        return False
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if -exponent > NUMERIC_FRACTION_DIGITS:
        return False
    return value.is_zero() or value.adjusted() < NUMERIC_INTEGER_DIGITS


_SURROGATE = re.compile("[\ud800-\udfff]")


def text_holds(value: str) -> bool:
    """Whether PostgreSQL's (UTF-8) text holds ``value``: neither U+0000 (NUL) nor a lone surrogate, which is
    what a byte that is not UTF-8 becomes when a file is read with ``surrogateescape``."""
    return "\x00" not in value and (value.isascii() or _SURROGATE.search(value) is None)


def undecoded_bytes(value: str) -> bytes:
    """The bytes that were not UTF-8 in ``value`` (read with ``surrogateescape``), in order."""
    return bytes(ord(c) - 0xDC00 for c in _SURROGATE.findall(value) if 0xDC80 <= ord(c) <= 0xDCFF)


def held_text(value: str) -> str:
    """``value`` as text PostgreSQL holds: a NUL written as its JSON escape ``\\u0000``, a byte that was not
    UTF-8 as ``\\xff``, any other lone surrogate as ``\\udXXX``."""
    value = value.replace("\x00", "\\u0000")
    if value.isascii():
        return value
    return _SURROGATE.sub(lambda m: f"\\x{ord(m[0]) - 0xDC00:02x}" if 0xDC80 <= ord(m[0]) <= 0xDCFF
                          else f"\\u{ord(m[0]):04x}", value)


NUL_MESSAGE = 'must not contain "\\u0000" (NUL), which PostgreSQL text cannot hold'


def text_problems(value: str) -> list[str]:
    """Why PostgreSQL's text cannot hold ``value``, each reason as a message ends (``field: <reason>``); empty
    when it can: a NUL (the value shown, as JSON), bytes that were not UTF-8 (shown in hex)."""
    if text_holds(value):
        return []
    reasons = []
    if "\x00" in value:
        reasons.append(f"{NUL_MESSAGE}, got {json.dumps(value[:64])}")
    if not text_holds(value.replace("\x00", "")):
        undecoded = undecoded_bytes(value)
        reasons.append(f"must be UTF-8 text, holds the bytes {undecoded[:16].hex(' ')}" if undecoded
                       else "must be UTF-8 text, holds a lone surrogate")
    return reasons
