"""Snapshots as set-level inputs (issue 14): the state is a function of the set of events and snapshots.

A snapshot of audience A at T is (1) a qualify event per listed row and (2) a verdict at T on every pair of A:
listed -> qualify, not listed -> disqualify. The greatest ts decides, disqualify winning a tie
(tests/reference_model.py, SnapshotModel). So any arrival order, batching and duplication of events and
snapshots, through any transport, ends in the same live state, the same answers about the past, the same
sizes over time, and a change feed that replays to that state. Guards are not order independent: every
import here is forced. Audiences have no ttl.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from http_helpers import json_headers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_model import Event, Snapshot, SnapshotModel, dumps, expected_feed, to_us
from sqlhelpers import rows, scalar

from pyapp import cli
from pyapp.ingest.staging import StagedRow, format_row, load_rows
from pyapp.ingest.snapshot import import_rows

pytest_plugins = ["http_fixtures"]
# The app's connection pool (psycopg_pool jitters connection lifetimes with `random`) runs in the TestClient's
# thread while Hypothesis draws examples; Hypothesis would take that for a strategy using `random`.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")

BASE = Decimal(1_699_999_200)  # 2023-11-14T22:00:00Z: an hour boundary
STEP = 1200  # 20 minutes: inputs at the hour boundaries and two between each
TIMES = [BASE + k * STEP for k in range(7)]  # 22:00, 22:20, ..., 00:00
HOUR = 3600
EDGES = [BASE + h * HOUR for h in range(-1, 4)]  # the hour buckets of the window: 21:00 .. 01:00
USERS = ["u1", "u2", "u3", "u4"]
FS = "fs_user_id"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FEED = "SELECT cursor, change, identifier_type, identifier, audience_id, event_ts FROM passthrough.changes(%s, %s)"
EVENT_TRANSPORTS = ("apply_events", "load", "http")
SNAPSHOT_TRANSPORTS = ("import_rows", "http")

_examples = itertools.count(1)


def instant(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


# --------------------------------------------------------------------------- inputs, arrivals


@dataclass(frozen=True)
class Step:
    """What one write sends: a batch of events, or one snapshot; and through which transport."""

    via: str
    inputs: tuple  # Events, or one Snapshot

    def __repr__(self) -> str:
        return f"Step({self.via}, {list(self.inputs)})"


def ev(identifier: str, qualified: bool, ts: Decimal, audience: str = "A") -> Event:
    return Event(FS, identifier, audience, qualified, ts)


def snap(at: Decimal, listed: list[tuple[str, Decimal | None]], audience: str = "A") -> Snapshot:
    return Snapshot(audience, at, tuple((FS, i, ts) for i, ts in listed))


times_st = st.sampled_from(TIMES)
event_st = st.builds(ev, st.sampled_from(USERS), st.booleans(), times_st, st.sampled_from(["A", "B"]))


def rows_st(at: Decimal):
    """A snapshot's rows: identifiers (a repeat now and then), each with a ts at or before T, or none (T)."""
    return st.lists(st.tuples(st.just(FS), st.sampled_from(USERS),
                              st.one_of(st.none(), st.sampled_from([t for t in TIMES if t <= at]))), max_size=4)


@st.composite
def snapshot_st(draw):
    at = draw(times_st)
    return Snapshot(draw(st.sampled_from(["A", "B"])), at, tuple(draw(rows_st(at))))


@st.composite
def inputs_st(draw):
    """A set of events and snapshots over audiences A and B: snapshots before, between and after events, a few
    snapshots again at the same T with the same list (a resend) or another, and a few inputs sent twice."""
    inputs = list(draw(st.lists(st.one_of(event_st, event_st, snapshot_st()), min_size=1, max_size=16)))
    snapshots = [x for x in inputs if isinstance(x, Snapshot)]
    if snapshots:
        for again in draw(st.lists(st.sampled_from(snapshots), max_size=2)):
            inputs.append(again if draw(st.booleans()) else replace(again, rows=tuple(draw(rows_st(again.at)))))
    return inputs + draw(st.lists(st.sampled_from(inputs), max_size=3))


@st.composite
def arrival_st(draw, inputs, event_transports=EVENT_TRANSPORTS, snapshot_transports=SNAPSHOT_TRANSPORTS):
    """The inputs in a shuffled order, consecutive events grouped into batches at random, each step through a
    transport drawn at random."""
    order = draw(st.permutations(inputs))
    groups: list[list] = []
    for item in order:
        joins = (isinstance(item, Event) and groups and isinstance(groups[-1][0], Event) and draw(st.booleans()))
        if joins:
            groups[-1].append(item)
        else:
            groups.append([item])
    return [Step(draw(st.sampled_from(event_transports if isinstance(g[0], Event) else snapshot_transports)),
                 tuple(g)) for g in groups]


@st.composite
def arrivals_st(draw):
    return draw(arrival_st(draw(inputs_st())))


# --------------------------------------------------------------------------- writing, through each transport


def staged_events(events) -> bytes:
    return "".join(
        format_row(n, StagedRow(type="passthrough", action="qualify" if e.qualified else "disqualify",
                                identifier_type=e.identifier_type, identifier=e.identifier,
                                audience_id=e.audience_id, ts=str(e.ts)))
        for n, e in enumerate(events, 1)).encode()


def staged_snapshot(s: Snapshot) -> bytes:
    return "".join(
        format_row(n, StagedRow(type="passthrough", action="qualify", identifier_type=t, identifier=i,
                                audience_id=s.audience_id, ts=None if ts is None else str(ts)))
        for n, (t, i, ts) in enumerate(s.rows, 2)).encode()  # numbered as CSV lines: the header is line 1


def snapshot_csv(s: Snapshot) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["type", "action", "audience_id", "ts", FS])
    for t, i, ts in s.rows:
        assert t == FS
        writer.writerow(["passthrough", "qualify", s.audience_id, "" if ts is None else ts, i])
    return out.getvalue()


def events_csv(events) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["type", "action", "audience_id", "ts", FS])
    for e in events:
        assert e.identifier_type == FS
        writer.writerow(["passthrough", "qualify" if e.qualified else "disqualify", e.audience_id, e.ts, e.identifier])
    return out.getvalue()


class Writer:
    """Sends steps through SQL (a psycopg connection), HTTP (a TestClient with a private key) or the CLI."""

    def __init__(self, conn, client=None, key=None, db_url=None, tmp_path: Path | None = None) -> None:
        self.conn, self.client, self.key, self.db_url, self.tmp_path = conn, client, key, db_url, tmp_path
        self.files = itertools.count(1)

    def send(self, step: Step) -> None:
        if isinstance(step.inputs[0], Snapshot):
            [snapshot] = step.inputs
            getattr(self, f"snapshot_{step.via}")(snapshot)
        else:
            getattr(self, f"events_{step.via}")(list(step.inputs))

    def events_apply_events(self, events) -> None:
        self.conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in events]),))

    def events_load(self, events) -> None:
        with self.conn.transaction():
            load_rows(self.conn, staged_events(events))

    def events_http(self, events) -> None:
        response = self.client.post("/v3/events", headers=json_headers(self.key),
                                    content=dumps([e.as_json() for e in events]).encode())
        assert response.status_code == 202, response.text

    def snapshot_import_rows(self, s: Snapshot) -> None:
        with self.conn.transaction():
            import_rows(self.conn, staged_snapshot(s), s.audience_id, at=s.at, force=True)

    def snapshot_http(self, s: Snapshot) -> None:
        response = self.client.post(f"/v3/audiences/{s.audience_id}/snapshot",
                                    params={"force": "true", "at": str(s.at)},
                                    headers={"content-type": "text/csv", "x-api-key": self.key},
                                    content=snapshot_csv(s).encode())
        assert response.status_code == 200, response.text

    def events_cli(self, events) -> None:
        path = self.tmp_path / f"events-{next(self.files)}.csv"
        path.write_text(events_csv(events))
        assert cli.main(["load", "--database-url", self.db_url, "--quiet", str(path)]) == 0

    def snapshot_cli(self, s: Snapshot) -> None:
        path = self.tmp_path / f"{next(self.files)}" / f"{s.audience_id}.csv"
        path.parent.mkdir()
        path.write_text(snapshot_csv(s))
        assert cli.main(["import", "--database-url", self.db_url, "--quiet", "--at", str(s.at), "--force",
                         str(path)]) == 0


# --------------------------------------------------------------------------- each example's own audiences, customers


class Namespace:
    """Audiences and customers of one example's own, so that examples sharing a database never meet (and reads
    stay as fast on the hundredth): audiences A and B, defined, and the customers u1..u4."""

    def __init__(self, conn) -> None:
        n = next(_examples)
        self.ext = {"A": f"snap-{n}-a", "B": f"snap-{n}-b"}  # label -> external audience id
        self.name = {self.ext["A"]: f"snap_{n}_a", self.ext["B"]: f"snap_{n}_b"}  # external id -> segment name
        for ext, name in self.name.items():
            conn.execute("SELECT passthrough.create_audience(%s, %s)", (name, ext))
        self.subset = sorted(self.name.values())
        self.prefix = f"e{n}-"
        self.users = [self.identifier(u) for u in USERS]

    def identifier(self, label: str) -> str:
        return self.prefix + label

    def relabel(self, steps: list[Step]) -> list[Step]:
        """The steps with this example's audience ids and identifiers."""
        def one(x):
            if isinstance(x, Snapshot):
                return replace(x, audience_id=self.ext[x.audience_id],
                               rows=tuple((t, self.identifier(i), ts) for t, i, ts in x.rows))
            return replace(x, audience_id=self.ext[x.audience_id], identifier=self.identifier(x.identifier))
        return [Step(s.via, tuple(one(x) for x in s.inputs)) for s in steps]


# --------------------------------------------------------------------------- reading


def settle(conn) -> None:
    """Wait until no committed change waits behind a transaction open elsewhere (autovacuum, the app's tasks)."""
    deadline = time.monotonic() + 30
    while scalar(conn, "SELECT passthrough.changes_pending()"):
        assert time.monotonic() < deadline, "the feed is held back for good"
        time.sleep(0.01)


def read_feed(conn, after: str, audience_ids) -> dict[tuple, list[tuple[str, int]]]:
    """Per pair of these audiences, its changes after the cursor in feed order: (change, event_ts in us)."""
    settle(conn)
    by_pair: dict[tuple, list[tuple[str, int]]] = {}
    while True:
        page = rows(conn, FEED, (after, 500))
        for _, change, t, i, a, event_ts in page:
            if a in audience_ids:
                by_pair.setdefault((t, i, a), []).append((change, micros(event_ts)))
        if len(page) < 500:
            return by_pair
        after = page[-1][0]


def replayed(feed) -> set[tuple]:
    """The pairs the feed leaves in, replayed change by change; every change must move its pair."""
    members = set()
    for pair, changes in feed.items():
        for change, _ in changes:
            assert (change == "entered") == (pair not in members), (pair, changes)
            members ^= {pair}
    return members


def start_cursor(conn) -> str:
    settle(conn)
    return scalar(conn, "SELECT passthrough.current_change_cursor()")


def moments(model: SnapshotModel) -> list[int]:
    """Every distinct input time, 1 us before and after each, and a time before them all."""
    return sorted({to_us(BASE) - HOUR * 1_000_000}
                  | {t + d for t in model.input_times() for d in (-1, 0, 1)})


def observe(conn, ns: Namespace, at_us: list[int], client=None, key=None) -> dict:
    """Everything the public reads say about the example's audiences and customers, keyed by question."""
    ext_of = {name: ext for ext, name in ns.name.items()}
    seen: dict = {}
    for user in ns.users:
        live = rows(conn, "SELECT name, size FROM passthrough.customer_audiences(%s, %s, %s)",
                    (FS, user, ns.subset))
        seen[("customer_audiences", user)] = sorted((ext_of[n], s) for n, s in live)
    for ext, name in ns.name.items():
        seen[("get_audience.size", ext)] = scalar(conn, "SELECT size FROM passthrough.get_audience(%s)", (name,))
        if client is not None:
            segment = client.get(f"/v3/segments/{name}", headers=json_headers(key)).json()
            seen[("GET /v3/segments size", ext)] = segment["size"]
    for us in at_us:
        for user in ns.users:
            got = rows(conn, "SELECT name, size FROM passthrough.customer_audiences_at(%s, %s, %s, %s)",
                       (FS, user, ns.subset, instant(us)))
            seen[("customer_audiences_at", user, us)] = sorted((ext_of[n], s) for n, s in got)
        for ext, name in ns.name.items():
            seen[("audience_size_at", ext, us)] = scalar(conn, "SELECT passthrough.audience_size_at(%s, %s)",
                                                         (name, instant(us)))
    for ext, name in ns.name.items():
        seen[("audience_size_history", ext)] = [
            (micros(b_start), micros(b_end), *counts) for b_start, b_end, *counts in rows(
                conn, "SELECT * FROM passthrough.audience_size_history(%s, %s, %s, 'hour')",
                (name, instant(to_us(EDGES[0] + 1800)), instant(to_us(EDGES[-1] - 1800))))]
    return seen


def predict(model: SnapshotModel, ns: Namespace, at_us: list[int], http: bool = False) -> dict:
    """What observe() must find, from the model."""
    expected: dict = {}
    for user in ns.users:
        expected[("customer_audiences", user)] = sorted(
            (ext, model.size(ext)) for ext in model.audiences_of(FS, user))
    for ext in ns.name:
        expected[("get_audience.size", ext)] = model.size(ext)
        if http:
            expected[("GET /v3/segments size", ext)] = model.size(ext)
    for us in at_us:
        for user in ns.users:
            expected[("customer_audiences_at", user, us)] = sorted(
                (ext, model.size(ext, us)) for ext in model.audiences_of(FS, user, us))
        for ext in ns.name:
            expected[("audience_size_at", ext, us)] = model.size(ext, us)
    for ext in ns.name:
        expected[("audience_size_history", ext)] = model.size_history(ext, [to_us(e) for e in EDGES])
    return expected


def mismatches(got: dict, expected: dict) -> dict:
    """{question: (got, expected)} where they differ (empty when all agree): short enough to read."""
    assert got.keys() == expected.keys()
    return {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}


def check_against_model(conn, ns: Namespace, steps: list[Step], cursor: str, client=None, key=None) -> None:
    model = SnapshotModel(x for s in steps for x in s.inputs)
    at_us = moments(model)
    expected_reads = predict(model, ns, at_us, http=client is not None)
    assert mismatches(observe(conn, ns, at_us, client, key), expected_reads) == {}
    feed = read_feed(conn, cursor, ns.name)
    # the contract: replayed pair by pair, the feed ends in the live state
    assert replayed(feed) == model.qualified_pairs()
    # and it is exactly the live state's changes from one commit to the next (a late event that a snapshot
    # overrides writes nothing; a pair never in has no changes), with the ts that decided each
    expected = expected_feed([list(s.inputs) for s in steps])
    assert {p: [c for c, _ in cs] for p, cs in feed.items()} == {p: [c for c, _ in cs] for p, cs in expected.items()}
    assert feed == expected


# --------------------------------------------------------------------------- 1. the reproduction


REPRODUCTION = {
    "events first": ["m1", "x", "snapshot"],
    "snapshot first": ["snapshot", "m1", "x"],
    "snapshot between": ["m1", "snapshot", "x"],
}


@pytest.mark.parametrize("via", ["sql", "http"])
@pytest.mark.parametrize("order", sorted(REPRODUCTION))
def test_a_late_event_older_than_a_snapshot_does_not_bring_back_a_member(enabled, client, private_key, order, via):
    """qualify m1@50, qualify x@100, snapshot {m1} at 200: x is out afterwards whatever the arrival order."""
    ns = Namespace(enabled)
    inputs = {"m1": ev("m1", True, BASE + 50), "x": ev("x", True, BASE + 100),
              "snapshot": snap(BASE + 200, [("m1", None)])}
    sql_via = {"m1": "apply_events", "x": "apply_events", "snapshot": "import_rows"}
    steps = [Step(sql_via[name] if via == "sql" else "http", (inputs[name],)) for name in REPRODUCTION[order]]
    writer = Writer(enabled, client, private_key)
    cursor = start_cursor(enabled)
    for step in ns.relabel(steps):
        writer.send(step)
    aud, name, x, m1 = ns.ext["A"], ns.name[ns.ext["A"]], ns.identifier("x"), ns.identifier("m1")
    assert rows(enabled, "SELECT name FROM passthrough.customer_audiences('fs_user_id', %s)", (x,)) == []
    assert rows(enabled, "SELECT name FROM passthrough.customer_audiences('fs_user_id', %s)", (m1,)) == [(name,)]
    assert scalar(enabled, "SELECT size FROM passthrough.get_audience(%s)", (name,)) == 1
    # the past: x was in from 100 until the snapshot at 200
    assert [scalar(enabled, "SELECT passthrough.audience_size_at(%s, %s)", (name, instant(to_us(BASE + s))))
            for s in (49, 50, 100, 199, 200, 300)] == [0, 1, 2, 2, 1, 1]
    for s, expected in ((150, [(name,)]), (200, [])):
        assert rows(enabled, "SELECT name FROM passthrough.customer_audiences_at('fs_user_id', %s, NULL, %s)",
                    (x, instant(to_us(BASE + s)))) == expected
    # the feed: x enters and leaves only where it was in live; a late x@100 after the snapshot writes nothing
    feed = read_feed(enabled, cursor, {aud})
    assert replayed(feed) == {(FS, m1, aud)}
    assert [c for c, _ in feed.get((FS, x, aud), [])] == (["entered", "exited"] if order == "events first" else [])


@pytest.mark.parametrize("via", ["import_rows", "http"])
def test_each_row_of_a_snapshot_is_an_event_even_when_an_identifier_is_listed_twice(enabled, client, private_key, via):
    """A snapshot at 2400 listing u1 without a ts (so at 2400) and again at 1200: two qualify events, so u1 is in
    from 1200 on (the generated tests list an identifier twice now and then; this pins the case)."""
    ns = Namespace(enabled)
    [step] = ns.relabel([Step(via, (snap(BASE + 2400, [("u1", None), ("u1", BASE + 1200)]),))])
    Writer(enabled, client, private_key).send(step)
    name = ns.name[ns.ext["A"]]
    assert [scalar(enabled, "SELECT passthrough.audience_size_at(%s, %s)", (name, instant(to_us(BASE + s))))
            for s in (1199, 1200, 2399, 2400)] == [0, 1, 1, 1]


# --------------------------------------------------------------------------- 2. random arrivals, every transport


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(steps=arrivals_st())
def test_any_arrival_through_any_transport_matches_the_model(enabled, client, private_key, steps):
    """Live reads, sizes, at: reads at every input time and around it, hourly size history and the change feed
    all equal the model of the set of inputs, whatever their order, batching, repeats and transports."""
    ns = Namespace(enabled)
    steps = ns.relabel(steps)
    cursor = start_cursor(enabled)
    writer = Writer(enabled, client, private_key)
    for step in steps:
        writer.send(step)
    check_against_model(enabled, ns, steps, cursor, client, private_key)


# --------------------------------------------------------------------------- 3. through the CLI


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(steps=inputs_st().flatmap(lambda inputs: arrival_st(inputs, ("cli",), ("cli",))))
def test_passthrough_load_and_import_match_the_model(enabled, http_database_url, tmp_path_factory, steps):
    """`passthrough load FILE` for each batch of events, `passthrough import FILE --at T --force` for each
    snapshot, in a random order: the same answers as the model."""
    ns = Namespace(enabled)
    steps = ns.relabel(steps)
    cursor = start_cursor(enabled)
    writer = Writer(enabled, db_url=http_database_url, tmp_path=tmp_path_factory.mktemp("cli"))
    for step in steps:
        writer.send(step)
    check_against_model(enabled, ns, steps, cursor)


# --------------------------------------------------------------------------- 4. two orders, one result


def outcome(conn, ns: Namespace, cursor: str, at_us: list[int]) -> tuple[set, dict]:
    """What a run left, with audiences and customers by label (A, u1, ...): the feed replayed, and every read of
    observe()."""
    label = {ext: label for label, ext in ns.ext.items()} | {ns.identifier(u): u for u in USERS}

    def unlabel(value):
        if isinstance(value, (tuple, list, set)):
            return type(value)(unlabel(v) for v in value)
        return label.get(value, value) if isinstance(value, str) else value

    return unlabel(replayed(read_feed(conn, cursor, ns.name))), {
        unlabel(key): unlabel(value) for key, value in observe(conn, ns, at_us).items()}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_two_arrival_orders_give_the_same_feed_replay_and_sizes(enabled, client, private_key, data):
    """The same inputs in two orders, batchings and transports, each into audiences and customers of its own:
    the feed replays to the same members and every read (live, at:, size history) is the same. No model."""
    inputs = data.draw(inputs_st(), "inputs")
    at_us = sorted({to_us(t) + d for t in TIMES for d in (-1, 0, 1)})
    runs = []
    for n in (1, 2):
        ns = Namespace(enabled)
        steps = ns.relabel(data.draw(arrival_st(inputs), f"arrival {n}"))
        cursor = start_cursor(enabled)
        writer = Writer(enabled, client, private_key)
        for step in steps:
            writer.send(step)
        runs.append(outcome(enabled, ns, cursor, at_us))
    (members_1, reads_1), (members_2, reads_2) = runs
    assert members_1 == members_2
    assert mismatches(reads_2, reads_1) == {}
