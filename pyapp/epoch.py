"""Seconds since the Unix epoch (ODP's ts) to timestamps, to the microsecond.

Seconds round to the microsecond half away from zero, as ``passthrough._ts_from_seconds`` does in SQL,
so a time a client sends reads the same instant as the same ts in an event.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_seconds(seconds: Decimal) -> datetime:
    """A timestamp; OverflowError or ValueError for seconds no timestamp can hold."""
    micros = (seconds * 1_000_000).to_integral_value(rounding=ROUND_HALF_UP)
    return EPOCH + timedelta(microseconds=int(micros))

