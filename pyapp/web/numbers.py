"""A numeric query parameter as the exact decimal it was written as.

Its range is the database's to check (PT010 naming the parameter); this only makes sure it is a number that
PostgreSQL's numeric can carry (pyapp/pgvalues.py): a value like 1e999999999 would overflow numeric (22003)
before any rule could name the parameter.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from pyapp.pgvalues import numeric_holds
from pyapp.web.responses import ApiError


def decimal_parameter(name: str, text: str, what: str) -> Decimal:
    """``text`` as a Decimal; 400 ``invalid_argument`` naming ``name`` ("must be ``what``") otherwise."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        value = None
    if value is None or not numeric_holds(value):
        raise ApiError(400, "invalid_argument", f"{name}: must be {what}, got {text[:64]!r}", field=name)
    return value
