"""Event JSON as PostgreSQL reads it: numbers exact, and type names as ``jsonb_typeof`` spells them.

The bulk loader reads NDJSON and JSON files in Python, where a float would keep 17 significant digits of a
``ts`` that PostgreSQL's jsonb (the HTTP path) keeps exactly: ``1700000000.020818353`` would then round to
another microsecond. So a number with a fraction or an exponent is kept as its text (``JsonNumber``, msgspec's
float hook), and an integer as Python's exact int; SQL converts and rounds them, as it does for every path.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import orjson


class JsonNumber(str):
    """A JSON number with a fraction or an exponent, as written (``1.5``, ``1e400``)."""

    __slots__ = ()


_decoder = msgspec.json.Decoder(float_hook=JsonNumber)
# what loads_exact raises for text that is not JSON (RecursionError: nesting deeper than the stack)
DECODE_ERRORS = (msgspec.DecodeError, RecursionError)


def loads_exact(text: str | bytes) -> Any:
    """JSON text to Python values, numbers exact (JsonNumber or int); DECODE_ERRORS when it is not JSON."""
    return _decoder.decode(text)


def dumps_exact(value: Any) -> str:
    """JSON text of a value from loads_exact, each JsonNumber written as the number it was."""
    if isinstance(value, JsonNumber | Decimal) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)  # exact, and an int of any size (orjson writes 64 bits at most)
    if isinstance(value, dict):
        return "{" + ",".join(f"{orjson.dumps(k).decode()}:{dumps_exact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps_exact(v) for v in value) + "]"
    return orjson.dumps(value).decode()


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal, JsonNumber)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
