"""Seconds since the Unix epoch (ODP's ts) to timestamps, to the microsecond.

Seconds round to the microsecond half away from zero, as ``passthrough._ts_from_seconds`` does in SQL,
so a time a client sends reads the same instant as the same ts in an event.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = Decimal("0.000001")


def from_seconds(seconds: Decimal) -> datetime:
    """A timestamp; an ArithmeticError (OverflowError, decimal.InvalidOperation) or ValueError for seconds no
    timestamp can hold."""
    # rounded at its own precision first: seconds * 1_000_000 would round to the context's 28 digits, and a
    # long fraction just below a half (…0000014999…) would then round up twice
    micros = seconds.quantize(MICROSECOND, rounding=ROUND_HALF_UP).scaleb(6)
    return EPOCH + timedelta(microseconds=int(micros))

