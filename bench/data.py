"""Benchmark data: a reproducible stream of passthrough events, and the state it must produce.

``generate(n_events, n_users, n_audiences, seed)`` returns events as tuples
``(identifier, audience_id, qualified, ts_us)`` (identifier type always fs_user_id) in delivery order:
ts grows with the stream except for the late share, which carries a ts from earlier in the stream;
the duplicate share repeats an earlier event (same ts, so the state does not depend on it).

``model_digest(events)`` states the semantics independently of SQL (the same rule as
tests/reference_model.py: greatest ts wins, disqualify wins a tie) and digests the final state the
same way ``sql_digest`` reads it back from PostgreSQL; ``model_snapshot_digest`` does the same for the
state once every audience has a snapshot listing its members at a T after every event.
"""

from __future__ import annotations

import hashlib
import random

BASE_US = 1_700_000_000 * 1_000_000
IDENTIFIER_TYPE = "fs_user_id"

# SQL that renders the state exactly as _state_lines does, in the same (byte) order.
STATE_SQL = """
SELECT md5(string_agg(
         t.name || '|' || m.identifier || '|' || x.external_id || '|'
         || ((extract(epoch FROM m.event_ts) * 1000000)::numeric)::bigint || '|' || m.qualified::int,
         E'\\n' ORDER BY t.name COLLATE "C", m.identifier COLLATE "C", x.external_id COLLATE "C")),
       count(*), count(*) FILTER (WHERE m.qualified)
FROM passthrough.memberships m
JOIN passthrough.identifier_types t ON t.id = m.identifier_type_id
JOIN passthrough.external_audiences x ON x.id = m.audience_key
"""


def generate(n_events: int, n_users: int, n_audiences: int, *, duplicates: float = 0.10,
             late: float = 0.20, seed: int = 42) -> list[tuple[str, str, bool, int]]:
    rng = random.Random(seed)
    users = [f"user-{i:07d}" for i in range(n_users)]
    audiences = [f"aud_{i:03d}" for i in range(n_audiences)]
    step = 1000  # 1 ms of event time per event: the stream covers n_events ms
    events: list[tuple[str, str, bool, int]] = []
    randrange, rnd = rng.randrange, rng.random
    for i in range(n_events):
        if events and rnd() < duplicates:
            events.append(events[randrange(len(events))])  # an exact repeat of an earlier event
            continue
        ts = BASE_US + i * step + randrange(step)
        if rnd() < late:
            ts -= randrange(1, max(2, i)) * step  # late: its ts belongs to earlier in the stream
        events.append((users[randrange(n_users)], audiences[randrange(n_audiences)], rnd() < 0.6, ts))
    return events


def model_state(events) -> dict[tuple[str, str], tuple[int, bool]]:
    state: dict[tuple[str, str], tuple[int, bool]] = {}
    get = state.get
    for identifier, audience, qualified, ts in events:
        key = (identifier, audience)
        current = get(key)
        if current is None or ts > current[0] or (ts == current[0] and current[1] and not qualified):
            state[key] = (ts, qualified)
    return state


def _state_lines(state) -> str:
    lines = []
    for (identifier, audience) in sorted(state, key=lambda k: (k[0].encode(), k[1].encode())):
        ts, qualified = state[(identifier, audience)]
        lines.append(f"{IDENTIFIER_TYPE}|{identifier}|{audience}|{ts}|{int(qualified)}")
    return "\n".join(lines)


def model_digest(events) -> tuple[str, int, int]:
    state = model_state(events)
    digest = hashlib.md5(_state_lines(state).encode()).hexdigest()
    return digest, len(state), sum(1 for _, q in state.values() if q)


# The same rendering of bench/run.py's bare-pipeline table (text keys, identifier type implied).
BARE_STATE_SQL = """
SELECT md5(string_agg(
         'fs_user_id|' || m.identifier || '|' || m.audience_id || '|'
         || ((extract(epoch FROM m.event_ts) * 1000000)::numeric)::bigint || '|' || m.qualified::int,
         E'\\n' ORDER BY m.identifier COLLATE "C", m.audience_id COLLATE "C")),
       count(*), count(*) FILTER (WHERE m.qualified)
FROM bench_bare_state m
"""


# After a snapshot at T decides every pair (bench/run.py's late-event rows): each qualified pair's event_ts is
# T (the snapshot's verdict; a ttl counts from it), and which ts a non-member's row keeps is not part of
# the semantics, so it is left out of the rendering: "-" in place of the ts, in SQL and in the model alike.
SNAPSHOT_STATE_SQL = """
SELECT md5(string_agg(
         t.name || '|' || m.identifier || '|' || x.external_id || '|'
         || CASE WHEN m.qualified THEN (((extract(epoch FROM m.event_ts) * 1000000)::numeric)::bigint)::text
                 ELSE '-' END
         || '|' || m.qualified::int,
         E'\\n' ORDER BY t.name COLLATE "C", m.identifier COLLATE "C", x.external_id COLLATE "C")),
       count(*), count(*) FILTER (WHERE m.qualified)
FROM passthrough.memberships m
JOIN passthrough.identifier_types t ON t.id = m.identifier_type_id
JOIN passthrough.external_audiences x ON x.id = m.audience_key
"""


def model_snapshot_digest(events, at_us: int) -> tuple[str, int, int]:
    """The digest SNAPSHOT_STATE_SQL must read back once every audience has a snapshot at ``at_us``
    (later than every event) listing exactly its members by ``events``: the same pairs and states as
    model_digest, each qualified pair at ``at_us``, a non-member's ts left out."""
    state = model_state(events)
    lines = []
    for (identifier, audience) in sorted(state, key=lambda k: (k[0].encode(), k[1].encode())):
        qualified = state[(identifier, audience)][1]
        lines.append(f"{IDENTIFIER_TYPE}|{identifier}|{audience}|{at_us if qualified else '-'}|{int(qualified)}")
    digest = hashlib.md5("\n".join(lines).encode()).hexdigest()
    return digest, len(state), sum(1 for _, q in state.values() if q)


def sql_digest(conn, sql: str = STATE_SQL) -> tuple[str, int, int]:
    cur = conn.cursor()
    cur.execute(sql)
    digest, pairs, qualified = cur.fetchone()
    conn.commit()
    return digest or hashlib.md5(b"").hexdigest(), int(pairs), int(qualified)


def ts_text(ts_us: int) -> str:
    """Exact decimal seconds for a microsecond timestamp."""
    return f"{ts_us // 1_000_000}.{ts_us % 1_000_000:06d}"
