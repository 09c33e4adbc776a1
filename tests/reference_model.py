"""A pure-Python statement of the membership semantics, for comparing against the SQL.

The state of a (identifier type, identifier, audience) pair is decided by the event with the greatest
ts; on equal ts disqualify wins. ts is kept in whole microseconds, as the database keeps it (halves round away from zero, like numeric round()).

MembershipModel folds events in one at a time. SnapshotModel states the rule for a set of inputs, events and
snapshots (issue 14), by evaluating all of them for every question it answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

Pair = tuple[str, str, str]  # (identifier_type, identifier, audience_id)
MICROSECOND = Decimal("0.000001")


def to_us(ts: Decimal) -> int:
    """Seconds since the Unix epoch in whole microseconds, as the database keeps them. Rounded from ts itself:
    ts * 1_000_000 would first round to the context's 28 digits (...0000014999...9 would become ...0000015)."""
    return int(ts.quantize(MICROSECOND, rounding=ROUND_HALF_UP).scaleb(6))


@dataclass(frozen=True)
class Event:
    identifier_type: str
    identifier: str
    audience_id: str
    qualified: bool
    ts: Decimal  # seconds since the Unix epoch

    @property
    def ts_us(self) -> int:
        return to_us(self.ts)

    @property
    def pair(self) -> Pair:
        return (self.identifier_type, self.identifier, self.audience_id)

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


@dataclass(frozen=True)
class Snapshot:
    """The complete membership of one audience at time `at` (T). Each row is (identifier_type, identifier, ts),
    ts <= T, or None for T."""

    audience_id: str
    at: Decimal
    rows: tuple[tuple[str, str, Decimal | None], ...]

    @property
    def at_us(self) -> int:
        return to_us(self.at)

    def listed(self, identifier_type: str, identifier: str) -> bool:
        return any((t, i) == (identifier_type, identifier) for t, i, _ in self.rows)

    def events(self) -> list[Event]:
        """What a snapshot is first: each row is an ordinary qualify event at its ts (T when it has none)."""
        return [Event(t, i, self.audience_id, True, self.at if ts is None else ts) for t, i, ts in self.rows]


class SnapshotModel:
    """The state as a function of a set of inputs: events and snapshots, in any order, any number of times.

    An input speaks about a pair at one ts, for or against its membership:
      - an event, for its own pair (a snapshot's rows are events too);
      - a snapshot of audience A at T gives a verdict at T on every pair of A: listed -> qualify, not listed ->
        disqualify.
    The state of a pair at t is decided by its inputs with ts <= t: the greatest ts decides and, on equal ts,
    disqualify wins (so several snapshots of A at the same T say "in" only for a pair listed in all of them).
    A time of None means with every input (the live state). Nothing is kept but the inputs: every answer
    evaluates them all."""

    def __init__(self, inputs=()) -> None:
        self.events: list[Event] = []
        self.snapshots: list[Snapshot] = []
        self.add(inputs)

    def add(self, inputs) -> None:
        for item in inputs:
            if isinstance(item, Snapshot):
                self.snapshots.append(item)
                self.events += item.events()
            elif isinstance(item, Event):
                self.events.append(item)
            else:
                raise TypeError(f"not an input: {item!r}")

    def inputs_of(self, pair: Pair) -> list[tuple[int, bool]]:
        """(ts_us, qualified) of every input that speaks about the pair."""
        identifier_type, identifier, audience_id = pair
        found = [(e.ts_us, e.qualified) for e in self.events if e.pair == pair]
        found += [(s.at_us, s.listed(identifier_type, identifier)) for s in self.snapshots
                  if s.audience_id == audience_id]
        return found

    def decision(self, pair: Pair, at_us: int | None = None) -> tuple[int, bool] | None:
        """(ts_us, qualified) decided by the pair's inputs with ts <= at_us; None when none speaks."""
        considered = [(ts, q) for ts, q in self.inputs_of(pair) if at_us is None or ts <= at_us]
        if not considered:
            return None
        newest = max(ts for ts, _ in considered)
        return newest, all(q for ts, q in considered if ts == newest)

    def qualified(self, pair: Pair, at_us: int | None = None) -> bool:
        decided = self.decision(pair, at_us)
        return decided is not None and decided[1]

    def pairs(self) -> set[Pair]:
        """Every customer named by an input with every audience named by one. Any other pair has no input but
        "not listed" verdicts, so it is never qualified."""
        customers = {(e.identifier_type, e.identifier) for e in self.events}
        audiences = {e.audience_id for e in self.events} | {s.audience_id for s in self.snapshots}
        return {(t, i, a) for t, i in customers for a in audiences}

    def qualified_pairs(self, at_us: int | None = None) -> set[Pair]:
        return {pair for pair in self.pairs() if self.qualified(pair, at_us)}

    def audiences_of(self, identifier_type: str, identifier: str, at_us: int | None = None) -> set[str]:
        return {a for t, i, a in self.qualified_pairs(at_us) if (t, i) == (identifier_type, identifier)}

    def size(self, audience_id: str, at_us: int | None = None) -> int:
        return sum(1 for _, _, a in self.qualified_pairs(at_us) if a == audience_id)

    def sizes(self, at_us: int | None = None) -> dict[str, int]:
        """{audience: size} of the audiences with members, as MembershipModel.sizes."""
        sizes: dict[str, int] = {}
        for _, _, audience in self.qualified_pairs(at_us):
            sizes[audience] = sizes.get(audience, 0) + 1
        return sizes

    def input_times(self) -> list[int]:
        """The distinct ts_us of all inputs (events, snapshot rows, snapshot times), ascending."""
        return sorted({e.ts_us for e in self.events} | {s.at_us for s in self.snapshots})

    def moves(self, audience_id: str, start_us: int, end_us: int) -> tuple[int, int]:
        """(entered, exited) in (start, end]: the pairs of the audience whose state after all inputs of a ts in
        it differs from their state just before that ts (1 us before: every ts is in whole microseconds)."""
        entered = exited = 0
        for ts in self.input_times():
            if start_us < ts <= end_us:
                for pair in self.pairs():
                    if pair[2] == audience_id:
                        before, after = self.qualified(pair, ts - 1), self.qualified(pair, ts)
                        entered += after and not before
                        exited += before and not after
        return entered, exited

    def size_history(self, audience_id: str, edges_us: list[int]) -> list[tuple[int, int, int, int, int, int]]:
        """Per bucket (start, end] between consecutive edges: (start_us, end_us, size at start, entered, exited,
        size at end)."""
        return [(start, end, self.size(audience_id, start), *self.moves(audience_id, start, end),
                 self.size(audience_id, end))
                for start, end in zip(edges_us, edges_us[1:])]


def expected_feed(steps) -> dict[Pair, list[tuple[str, int]]]:
    """The change feed of applying `steps` one after another, each a list of inputs committed together: per pair,
    every change of its live state from one commit to the next ('entered' or 'exited'), with the ts of the input
    that decides the state after it. A pair never qualified after any commit has no changes."""
    model = SnapshotModel()
    feed: dict[Pair, list[tuple[str, int]]] = {}
    before: set[Pair] = set()
    for step in steps:
        model.add(step)
        after = model.qualified_pairs()
        for pair in sorted(before ^ after):
            feed.setdefault(pair, []).append(("entered" if pair in after else "exited", model.decision(pair)[0]))
        before = after
    return feed


def dumps(value) -> str:
    """JSON text with Decimals written as exact JSON numbers (json and orjson would go through float)."""
    import json
    import re

    text = json.dumps(value, default=lambda d: f"__decimal__{d}" if isinstance(d, Decimal) else str(d))
    return re.sub(r'"__decimal__(-?[0-9.E+-]+)"', r"\1", text)
