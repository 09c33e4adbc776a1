"""What PostgreSQL's types can hold, for the transports that hand it values.

A value that ``numeric`` or ``text`` cannot hold fails the whole statement that carries it (a COPY, a parameter)
with PostgreSQL's own error, which names neither the field nor the row, before any rule of ours could look at
it. So each transport refuses such a value first and names the field: a bulk load sets the row aside (or names
its line), a query parameter or a command-line option gets its own message. The rules about what a value means
(a ts's range, a share's bounds) stay SQL's.
"""

from __future__ import annotations

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


def text_holds(value: str) -> bool:
    """Whether PostgreSQL's text holds ``value``: anything but U+0000 (NUL)."""
    return "\x00" not in value


NUL_MESSAGE = 'must not contain "\\u0000" (NUL), which PostgreSQL text cannot hold'
