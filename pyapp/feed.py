"""The change feed as every transport shows it: GET /v3/changes, webhook payloads and ``passthrough changes``
print the same objects, with timestamps in UTC ending in Z. The feed's rules are passthrough.changes
(sql/functions/210_change_feed.sql); this module only shapes its rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

CHANGES_SQL = (
    "SELECT cursor, change, identifier_type, identifier, audience_id, audience, event_ts, received_at, source,"
    " batch_id FROM passthrough.changes(%s, %s::integer)"
)


def iso_utc(moment: datetime) -> str:
    """A database timestamp in UTC, to the microsecond, with a Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def change_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """One row of ``passthrough.changes`` (the columns of CHANGES_SQL, in order; extra columns are ignored)."""
    c, change, identifier_type, identifier, audience_id, audience, event_ts, received_at, source, batch_id = row[:10]
    return {
        "cursor": c,
        "change": change,
        "identifier_type": identifier_type,
        "identifier": identifier,
        "audience_id": audience_id,
        "audience": audience,
        "event_ts": iso_utc(event_ts),
        "received_at": iso_utc(received_at) if received_at is not None else None,
        "source": source,
        "batch_id": batch_id,
    }
