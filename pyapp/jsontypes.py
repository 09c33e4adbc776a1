"""The JSON type name of a parsed value, as PostgreSQL's jsonb_typeof and our error messages spell it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
