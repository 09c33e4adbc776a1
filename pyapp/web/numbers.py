"""A numeric query parameter as the exact decimal it was written as.

Its range is the database's to check (PT010 naming the parameter); this only makes sure it is a finite number
that PostgreSQL's numeric can carry: a value like 1e999999999 would overflow numeric (22003) before any rule
could name the parameter.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from pyapp.web.responses import ApiError

NUMBER_DIGITS = 1000  # a parameter's decimal exponent, either way: far inside what numeric holds


def decimal_parameter(name: str, text: str, what: str) -> Decimal:
    """``text`` as a Decimal; 400 ``invalid_argument`` naming ``name`` ("must be ``what``") otherwise."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or not -NUMBER_DIGITS <= value.adjusted() <= NUMBER_DIGITS:
        raise ApiError(400, "invalid_argument", f"{name}: must be {what}, got {text[:64]!r}", field=name)
    return value
