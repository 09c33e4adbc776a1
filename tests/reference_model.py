"""A pure-Python statement of the membership semantics, for comparing against the SQL.

The state of a (identifier type, identifier, audience) pair is decided by the event with the greatest
ts; on equal ts disqualify wins. ts is kept in whole microseconds, as the database keeps it (halves round away from zero, like numeric round()).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal


@dataclass(frozen=True)
class Event:
    identifier_type: str
    identifier: str
    audience_id: str
    qualified: bool
    ts: Decimal  # seconds since the Unix epoch

    @property
    def ts_us(self) -> int:
        return int((self.ts * 1_000_000).to_integral_value(rounding=ROUND_HALF_UP))

    def as_json(self) -> dict:
        return {
            "type": "passthrough",
            "action": "qualify" if self.qualified else "disqualify",
            "identifiers": {self.identifier_type: self.identifier},
            "data": {"audience_id": self.audience_id, "ts": self.ts},
        }


class MembershipModel:
    def __init__(self) -> None:
        # (identifier_type, identifier, audience_id) -> (ts_us, qualified)
        self.state: dict[tuple[str, str, str], tuple[int, bool]] = {}

    def apply(self, events) -> None:
        for event in events:
            key = (event.identifier_type, event.identifier, event.audience_id)
            current = self.state.get(key)
            if (
                current is None
                or event.ts_us > current[0]
                or (event.ts_us == current[0] and current[1] and not event.qualified)
            ):
                self.state[key] = (event.ts_us, event.qualified)

    def qualified_pairs(self) -> set[tuple[str, str, str]]:
        return {key for key, (_, qualified) in self.state.items() if qualified}

    def sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for _, _, audience in self.qualified_pairs():
            sizes[audience] = sizes.get(audience, 0) + 1
        return sizes


def dumps(value) -> str:
    """JSON text with Decimals written as exact JSON numbers (json and orjson would go through float)."""
    import json
    import re

    text = json.dumps(value, default=lambda d: f"__decimal__{d}" if isinstance(d, Decimal) else str(d))
    return re.sub(r'"__decimal__(-?[0-9.E+-]+)"', r"\1", text)
