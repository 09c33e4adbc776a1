"""Snapshot import: replace semantics, newer events kept, guards, dry-run diff, atomicity, CLI."""

from __future__ import annotations

import csv
import gzip
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from interleave import Sessions

from pyapp import cli
from pyapp.db import connect
from pyapp.ingest.staging import StagedRow, format_row
from pyapp.ingest.snapshot import SnapshotRefused, copy_text_chunks, import_rows, snapshot_diff
from reference_model import Event, Snapshot, SnapshotModel, dumps
from sqlhelpers import reset_data, rows, scalar
from test_apply_events_properties import sql_sizes, sql_state

BASE = Decimal(1_700_000_000)
AUD = "aud-a"


def snapshot_payload(members, audience=AUD, identifier_type="fs_user_id", action="qualify") -> bytes:
    """members: [(identifier, ts or None)]."""
    return "".join(
        format_row(n, StagedRow(type="passthrough", action=action, identifier_type=identifier_type,
                                identifier=identifier, audience_id=audience,
                                ts=None if ts is None else str(ts)))
        for n, (identifier, ts) in enumerate(members, 2)  # row numbers as CSV lines: the header is line 1
    ).encode()


def apply(conn, events) -> None:
    conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in events]),))


def members(conn, audience=AUD) -> dict[str, tuple[bool, Decimal]]:
    return {
        i: (q, ts)
        for i, q, ts in rows(
            conn,
            "SELECT m.identifier, m.qualified, extract(epoch FROM m.event_ts) FROM passthrough.memberships m"
            " JOIN passthrough.external_audiences x ON x.id = m.audience_key WHERE x.external_id = %s",
            (audience,),
        )
    }


@pytest.fixture
def enabled(conn):
    conn.execute("SELECT passthrough.enable()")
    return conn


def ev(identifier, qualified, ts, audience=AUD):
    return Event("fs_user_id", identifier, audience, qualified, BASE + ts)


def test_snapshot_replaces_the_membership_and_keeps_newer_events(enabled):
    apply(enabled, [
        ev("old-member", True, 10),        # not listed, older than T: disqualified at T
        ev("newer-member", True, 150),     # not listed, qualified after T: stays (kept newer)
        ev("listed-member", True, 20),     # listed: stays, decided by the snapshot at T now
        ev("was-out", False, 30),          # listed, disqualified before: qualified at T
        ev("out-later", False, 200),       # listed with ts 90, disqualified later: stays out
        ev("other-audience", True, 10, audience="aud-b"),
    ])
    payload = snapshot_payload([("listed-member", BASE + 90), ("was-out", BASE + 80), ("out-later", BASE + 90),
                                ("new-member", BASE + 100)])
    result = import_rows(enabled, payload, AUD)
    assert result.snapshot_at.timestamp() == BASE + 100  # T defaults to the newest ts in the snapshot
    # counted as of T: old-member and listed-member were the members at T (newer-member joined later)
    assert (result.listed, result.to_qualify, result.to_disqualify, result.unchanged, result.kept_newer,
            result.members_before) == (4, 2, 1, 1, 2, 2)
    assert result.applied and result.changed == 3
    assert members(enabled) == {
        "old-member": (False, BASE + 100),
        "newer-member": (True, BASE + 150),
        "listed-member": (True, BASE + 100),
        "was-out": (True, BASE + 100),
        "out-later": (False, BASE + 200),
        "new-member": (True, BASE + 100),
    }
    assert members(enabled, "aud-b") == {"other-audience": (True, BASE + 10)}
    size = scalar(enabled, "SELECT passthrough._audience_size(id) FROM passthrough.external_audiences"
                           " WHERE external_id = %s", (AUD,))
    assert size == 4
    # the import is logged as one batch through the one writer: its 4 listed rows as events; who it leaves
    # out is the snapshot's own verdict, kept with its list, not an event
    assert rows(enabled, "SELECT source, event_count FROM passthrough.batches ORDER BY id DESC LIMIT 1") == [
        ("snapshot", 4)]
    assert rows(enabled, "SELECT listed, batch_id = (SELECT max(id) FROM passthrough.batches)"
                         " FROM passthrough.snapshots") == [(4, True)]


def test_explicit_time_and_rows_without_ts(enabled):
    apply(enabled, [ev("a", True, 10), ev("b", True, 60)])
    result = import_rows(enabled, snapshot_payload([("c", None)]), AUD, at=BASE + 50, max_disqualify_share=1)
    assert (result.to_qualify, result.to_disqualify, result.kept_newer) == (1, 1, 1)
    assert members(enabled) == {"a": (False, BASE + 50), "b": (True, BASE + 60), "c": (True, BASE + 50)}


def test_a_late_event_older_than_the_snapshot_changes_nothing(enabled):
    """The issue's reproduction: the snapshot {m1} at 200 decides x too, although x's qualify arrives later."""
    apply(enabled, [ev("m1", True, 50)])
    import_rows(enabled, snapshot_payload([("m1", None)]), AUD, at=BASE + 200, force=True)
    before = rows(enabled, "SELECT count(*) FROM passthrough.membership_changes")
    apply(enabled, [ev("x", True, 100)])
    # logged, and nothing else: no membership row, no feed row
    assert members(enabled) == {"m1": (True, BASE + 200)}
    assert rows(enabled, "SELECT count(*) FROM passthrough.events WHERE identifier = 'x'") == [(1,)]
    assert rows(enabled, "SELECT count(*) FROM passthrough.membership_changes") == before
    apply(enabled, [ev("x", True, 201)])  # newer than the snapshot: it stands
    assert members(enabled)["x"] == (True, BASE + 201)


# --------------------------------------------------------------------------- concurrent batches, forced


def applying(events):
    return lambda c: c.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in events]),))


def importing(listed, at):
    return lambda c: import_rows(c, snapshot_payload(listed), AUD, at=at, force=True)


def test_an_import_waits_for_a_batch_of_its_audience_in_flight(enabled, db_url):
    """Without the wait, the import could not see x (uncommitted) and x would stay qualified at 100."""
    apply(enabled, [ev("m1", True, 50)])
    with Sessions(db_url, 2) as (writer, importer):
        writer.start(applying([ev("x", True, 100)]))
        waiting = importer.start(importing([("m1", None)], BASE + 200))
        assert not waiting.done() and importer.blocked()
        writer.commit()
        importer.wait()
        importer.commit()
    assert members(enabled) == {"m1": (True, BASE + 200), "x": (False, BASE + 200)}


def test_a_batch_waits_for_an_import_of_its_audience_in_flight(enabled, db_url):
    """Without the wait, the batch's statement could not see the snapshot (uncommitted) and x would enter."""
    apply(enabled, [ev("m1", True, 50)])
    with Sessions(db_url, 2) as (importer, writer):
        importer.start(importing([("m1", None)], BASE + 200))
        waiting = writer.start(applying([ev("x", True, 100)]))
        assert not waiting.done() and writer.blocked()
        importer.commit()
        writer.wait()
        writer.commit()
    assert members(enabled) == {"m1": (True, BASE + 200)}  # x's event was only logged
    assert rows(enabled, "SELECT count(*) FROM passthrough.membership_changes WHERE identifier = 'x'") == [(0,)]


def test_a_batch_of_other_audiences_does_not_wait_for_an_import(enabled, db_url):
    apply(enabled, [ev("m1", True, 50), ev("y", True, 50, audience="aud-b")])
    with Sessions(db_url, 2) as (importer, writer):
        importer.start(importing([("m1", None)], BASE + 200))
        assert writer.start(applying([ev("y", False, 100, audience="aud-b")])).done()
        writer.commit()
        importer.commit()


def test_a_batch_naming_over_256_audiences_and_an_import_wait_for_each_other(enabled, db_url):
    """Such a batch takes one shared lock instead of one per audience; every import takes it exclusively."""
    apply(enabled, [ev("m1", True, 50)])
    wide = [ev("x", True, 100)] + [ev("x", True, 100, audience=f"aud-{n}") for n in range(300)]
    apply(enabled, wide[1:])  # the audiences exist: the batch below locks existing audiences
    with Sessions(db_url, 2) as (writer, importer):
        writer.start(applying(wide))
        waiting = importer.start(importing([("m1", None)], BASE + 200))
        assert not waiting.done() and importer.blocked()
        writer.commit()
        importer.wait()
        importer.commit()
    assert members(enabled)["x"] == (False, BASE + 200)


# --------------------------------------------------------------------------- the semantics, as a property


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prior=st.lists(st.builds(ev, st.sampled_from(["u1", "u2", "u3", "u4", "u5"]), st.booleans(),
                             st.integers(0, 20), st.sampled_from([AUD, "aud-b"])), max_size=25),
    listed=st.dictionaries(st.sampled_from(["u1", "u2", "u3", "u4", "u6"]), st.integers(0, 20), min_size=1),
    at_offset=st.integers(0, 5),
)
def test_snapshot_matches_the_model(enabled, prior, listed, at_offset):
    reset_data(enabled)
    if prior:
        apply(enabled, prior)
    listed_ts = {i: BASE + ts for i, ts in listed.items()}
    at = max(listed_ts.values()) + at_offset
    import_rows(enabled, snapshot_payload(list(listed_ts.items())), AUD, at=at, force=True)
    model = SnapshotModel([*prior, Snapshot(AUD, at, tuple(("fs_user_id", i, ts) for i, ts in listed_ts.items()))])
    # the qualified pairs and the ts that decided each (a non-member's stored row may lag: only its state counts)
    assert {key: ts for key, (ts, qualified) in sql_state(enabled).items() if qualified} == {
        pair: model.decision(pair)[0] for pair in model.qualified_pairs()}
    assert sql_sizes(enabled) == model.sizes()


# --------------------------------------------------------------------------- guards


def test_empty_snapshot_is_refused_unless_forced(enabled):
    apply(enabled, [ev("a", True, 10), ev("b", True, 10)])
    with pytest.raises(SnapshotRefused) as caught:
        import_rows(enabled, b"", AUD)
    assert caught.value.sqlstate == "PT022"
    assert "empty" in caught.value.message and "--force" in caught.value.hint
    assert members(enabled) == {"a": (True, BASE + 10), "b": (True, BASE + 10)}
    result = import_rows(enabled, b"", AUD, force=True)
    assert (result.to_disqualify, result.changed) == (2, 2)
    assert {q for q, _ in members(enabled).values()} == {False}


def test_disqualifying_more_than_the_share_is_refused_unless_forced(enabled):
    apply(enabled, [ev(f"m{i}", True, 10) for i in range(10)])
    keep3 = snapshot_payload([(f"m{i}", BASE + 20) for i in range(3)])  # drops 7 of 10
    with pytest.raises(SnapshotRefused) as caught:
        import_rows(enabled, keep3, AUD)
    assert caught.value.sqlstate == "PT023"
    assert "would disqualify 7 of 10 members (70.0%), more than the allowed 50.0%" in caught.value.message
    assert caught.value.detail.endswith("to qualify: 0, to disqualify: 7, unchanged: 3, kept by a newer input: 0")
    assert sum(q for q, _ in members(enabled).values()) == 10
    assert import_rows(enabled, keep3, AUD, max_disqualify_share=0.8).to_disqualify == 7
    assert sum(q for q, _ in members(enabled).values()) == 3


def test_force_overrides_the_share(enabled):
    apply(enabled, [ev(f"m{i}", True, 10) for i in range(4)])
    result = import_rows(enabled, snapshot_payload([("m0", BASE + 20)]), AUD, force=True)
    assert (result.to_disqualify, result.unchanged) == (3, 1)


def test_invalid_rows_refuse_the_whole_snapshot(enabled):
    apply(enabled, [ev("a", True, 10)])
    payload = (snapshot_payload([("b", BASE + 20)])
               + snapshot_payload([("c", BASE + 20)], audience="aud-other")
               + snapshot_payload([("d", BASE + 20)], action="disqualify")
               + snapshot_payload([("e", BASE * 1000)]))
    with pytest.raises(SnapshotRefused) as caught:
        import_rows(enabled, payload, AUD)
    assert caught.value.sqlstate == "PT020"
    messages = [item["message"] for item in caught.value.invalid]
    assert messages[0] == 'data.audience_id: this is a snapshot of "aud-a", got "aud-other"'
    assert messages[1].startswith("action: a snapshot lists the qualified members")
    assert "looks like milliseconds" in messages[2]
    assert members(enabled) == {"a": (True, BASE + 10)}


# --------------------------------------------------------------------------- dry run and atomicity


def test_a_dry_run_reports_the_guards_instead_of_raising_them(enabled):
    apply(enabled, [ev("a", True, 10), ev("b", True, 10)])
    result = import_rows(enabled, b"", AUD, dry_run=True)  # empty, so it also drops 2 of 2
    assert (result.applied, result.to_disqualify) == (False, 2)
    assert result.refused_by == ("empty_snapshot", "snapshot_disqualifies_too_many")
    assert result.refusal_reasons == ("it is empty", "it would disqualify 2 of 2 members (100.0%), more than the "
                                      "allowed 50.0%")
    assert [(c, i) for c, _, i, _, _ in snapshot_diff(enabled)] == [("disqualify", "a"), ("disqualify", "b")]
    assert (import_rows(enabled, b"", AUD, dry_run=True, force=True).refused_by,
            import_rows(enabled, b"", "aud-never-seen", dry_run=True).refused_by) == ((), ("empty_snapshot",))
    one_of_two = snapshot_payload([("a", BASE + 20)])
    assert import_rows(enabled, one_of_two, AUD, dry_run=True).refused_by == ()  # 50% is allowed
    with pytest.raises(SnapshotRefused) as caught:  # the import raises the first guard, as before
        import_rows(enabled, b"", AUD)
    assert (caught.value.sqlstate, caught.value.message) == ("PT022", 'snapshot of "aud-a" refused: it is empty')
    assert members(enabled) == {"a": (True, BASE + 10), "b": (True, BASE + 10)}
    applied = import_rows(enabled, one_of_two, AUD)
    assert (applied.applied, applied.refused_by, applied.refusal_reasons) == (True, (), ())


def test_rows_that_all_name_another_audience_are_one_error(enabled):
    payload = snapshot_payload([(f"u{i}", BASE + 20) for i in range(3)], audience="aud-b")
    for dry_run in (True, False):
        with pytest.raises(SnapshotRefused) as caught:
            import_rows(enabled, payload, AUD, dry_run=dry_run)
        assert caught.value.sqlstate == "PT024" and caught.value.invalid == []
        assert caught.value.message == 'snapshot of "aud-a" refused: its rows are of audience "aud-b"'
        assert "passthrough import --audience aud-b FILE" in caught.value.hint
    # rows of two other audiences: each row's problem, as any invalid rows
    mixed = payload + snapshot_payload([("v", BASE + 20)], audience="aud-c")
    with pytest.raises(SnapshotRefused) as caught:
        import_rows(enabled, mixed, AUD)
    assert caught.value.sqlstate == "PT020" and len(caught.value.invalid) == 4


def test_dry_run_reports_the_diff_and_changes_nothing(enabled):
    apply(enabled, [ev("stay", True, 10), ev("go", True, 10), ev("go2", True, 10), ev("late", True, 90)])
    before = members(enabled)
    result = import_rows(enabled, snapshot_payload([("stay", BASE + 50), ("new", BASE + 50)]), AUD,
                         dry_run=True, force=True)
    assert not result.applied and result.batch_id is None
    assert (result.to_qualify, result.to_disqualify, result.unchanged, result.kept_newer) == (1, 2, 1, 1)
    assert [(c, i) for c, _, i, _, _ in snapshot_diff(enabled)] == [
        ("disqualify", "go"), ("disqualify", "go2"), ("kept_newer", "late"), ("qualify", "new")]
    assert members(enabled) == before
    assert scalar(enabled, "SELECT count(*) FROM passthrough.batches") == 1


def test_a_concurrent_reader_sees_the_old_or_the_new_membership(db_url, enabled):
    apply(enabled, [ev(f"old{i}", True, 10) for i in range(5)])
    old = {f"old{i}" for i in range(5)}
    new = {f"new{i}" for i in range(5)}

    def qualified(c):
        return {i for (i,) in c.execute(
            "SELECT identifier FROM passthrough.memberships WHERE qualified ORDER BY 1").fetchall()}

    with connect(db_url) as writer, connect(db_url, autocommit=True) as reader:
        import_rows(writer, snapshot_payload([(i, BASE + 20) for i in sorted(new)]), AUD, force=True)
        assert qualified(reader) == old  # not committed yet: all old
        size = "SELECT passthrough._audience_size(id) FROM passthrough.external_audiences WHERE external_id = %s"
        assert reader.execute(size, (AUD,)).fetchone()[0] == 5
        writer.commit()
        assert qualified(reader) == new  # committed: all new, at once
        assert reader.execute(size, (AUD,)).fetchone()[0] == 5


def test_a_failure_midway_leaves_the_old_membership(db_url, enabled):
    apply(enabled, [ev("a", True, 10)])
    with connect(db_url) as c:
        import_rows(c, snapshot_payload([("b", BASE + 20)]), AUD, force=True)
        with pytest.raises(Exception):
            c.execute("SELECT passthrough.no_such_function()")  # the transaction fails after the import
        c.rollback()
    assert members(enabled) == {"a": (True, BASE + 10)}


def test_pg8000(db_url, enabled):
    apply(enabled, [ev("a", True, 10)])
    c = connect(db_url, driver="pg8000")
    try:
        result = import_rows(c, snapshot_payload([("b", BASE + 20)]), AUD, force=True)
        c.commit()
        with pytest.raises(SnapshotRefused):
            import_rows(c, b"", AUD)
        c.rollback()
    finally:
        c.close()
    assert result.to_disqualify == 1
    assert members(enabled) == {"a": (False, BASE + 20), "b": (True, BASE + 20)}


@pytest.mark.parametrize("driver", ["psycopg", "pg8000"])
def test_a_stream_of_chunks_is_staged_as_it_is_read(db_url, enabled, driver):
    """What the HTTP endpoint does: the rows are produced as the COPY reads them (copy_text_chunks)."""
    apply(enabled, [ev("a", True, 10)])
    read = []

    def records():
        for n in range(2, 502):
            read.append(n)
            yield n, StagedRow(type="passthrough", action="qualify", identifier_type="fs_user_id",
                               identifier=f"s{n}", audience_id=AUD, ts=str(BASE + 20))

    chunks = copy_text_chunks(records(), chunk_bytes=1000)
    c = connect(db_url, driver=driver)
    try:
        assert read == []  # nothing is read before the COPY asks
        result = import_rows(c, chunks, AUD, force=True)
        c.commit()
    finally:
        c.close()
    assert (result.listed, result.to_qualify, result.to_disqualify) == (500, 500, 1)
    assert len(read) == 500 and members(enabled)["a"] == (False, BASE + 20)


def test_copy_text_chunks_cuts_between_rows():
    rows_ = [(n, StagedRow(identifier=f"id-{n}")) for n in range(1, 101)]
    chunks = list(copy_text_chunks(iter(rows_), chunk_bytes=200))
    assert len(chunks) > 5 and all(chunk.endswith(b"\n") for chunk in chunks)
    assert b"".join(chunks) == b"".join(format_row(n, row).encode() for n, row in rows_)


# --------------------------------------------------------------------------- CLI


def write_snapshot(path: Path, members_, identifier_type="fs_user_id", audience=None) -> Path:
    audience = audience or path.name.split(".")[0]
    with gzip.open(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["type", "action", "audience_id", "ts", identifier_type])
        for identifier, ts in members_:
            w.writerow(["passthrough", "qualify", audience, ts, identifier])
    return path


def run(db_url, *args) -> int:
    return cli.main(["import", "--database-url", db_url, "--quiet", *args])


def test_cli_import_dry_run_and_guards(enabled, db_url, tmp_path, capsys):
    apply(enabled, [ev(f"m{i}", True, 10) for i in range(4)])
    path = write_snapshot(tmp_path / f"{AUD}.csv.gz", [("m0", BASE + 20), ("x", BASE + 20)])

    # 3 of 4 would go: a dry run shows the diff all the same, and names the guard
    assert run(db_url, "--dry-run", str(path)) == 0
    out = capsys.readouterr().out
    assert "would change audience aud-a" in out and "to qualify 1, to disqualify 3, unchanged 1" in out
    assert "- disqualify fs_user_id=m1" in out and "+ qualify    fs_user_id=x" in out
    assert (f"{path}: would be refused by: snapshot_disqualifies_too_many (it would disqualify 3 of 4 members "
            "(75.0%), more than the allowed 50.0%); use --force to import anyway\n") in out

    assert run(db_url, str(path)) == 1  # the import itself is refused
    err = capsys.readouterr().err
    assert 'snapshot of "aud-a" refused: it would disqualify 3 of 4 members (75.0%)' in err and "--force" in err

    assert run(db_url, "--dry-run", "--force", str(path)) == 0
    out = capsys.readouterr().out
    assert "to qualify 1, to disqualify 3, unchanged 1" in out and "would be refused" not in out
    assert sum(q for q, _ in members(enabled).values()) == 4

    assert run(db_url, "--max-disqualify-share", "0.75", str(path)) == 0
    out = capsys.readouterr().out
    assert "imported audience aud-a" in out and "4 memberships changed" in out
    assert {i for i, (q, _) in members(enabled).items() if q} == {"m0", "x"}


def test_cli_import_of_excels_csv_utf8_and_of_bytes_that_are_not_utf8(enabled, db_url, tmp_path, capsys):
    """A byte order mark at the start is not part of the header; a byte that is not UTF-8 names its row and
    field (it stopped the import with a UnicodeDecodeError naming neither)."""
    header = b"type,action,audience_id,ts,fs_user_id\n"
    path = tmp_path / f"{AUD}.csv"
    path.write_bytes(b"\xef\xbb\xbf" + header + f"passthrough,qualify,{AUD},{BASE + 20},m0\n".encode())
    assert run(db_url, str(path)) == 0
    assert {i for i, (q, _) in members(enabled).items() if q} == {"m0"}
    capsys.readouterr()
    path.write_bytes(header + f"passthrough,qualify,{AUD},{BASE + 30},m0\n".encode()
                     + f"passthrough,qualify,{AUD},{BASE + 30},m\xe9\n".encode("latin-1"))
    assert run(db_url, str(path)) == 1
    assert f"{path}:3: identifiers.fs_user_id: must be UTF-8 text, holds the bytes e9" in capsys.readouterr().err
    assert members(enabled) == {"m0": (True, BASE + 20)}  # nothing of the refused snapshot applied


def test_cli_refuses_a_diff_limit_out_of_range(enabled, db_url, tmp_path, capsys):
    path = write_snapshot(tmp_path / f"{AUD}.csv.gz", [("m0", BASE + 20)])
    assert run(db_url, "--dry-run", "--diff-limit", "-1", str(path)) == 1
    assert "diff_limit must be between 0 and 100000, got -1" in capsys.readouterr().err


def test_cli_refuses_a_diff_limit_without_a_dry_run(enabled, db_url, tmp_path, capsys):
    """It was ignored, its range never checked: the import ran as if it had not been given."""
    path = write_snapshot(tmp_path / f"{AUD}.csv.gz", [("m0", BASE + 20)])
    for limit in ("5", "-1"):
        assert run(db_url, "--diff-limit", limit, str(path)) == 1
        assert "error: --diff-limit: only a dry run lists a diff; add --dry-run\n" in capsys.readouterr().err
    assert members(enabled) == {}


def test_cli_leaves_the_share_range_to_the_database(enabled, db_url, tmp_path, capsys):
    path = write_snapshot(tmp_path / f"{AUD}.csv.gz", [("m0", BASE + 20)])
    assert run(db_url, "--max-disqualify-share", "1.5", str(path)) == 1
    assert "max_disqualify_share must be between 0 and 1, got 1.5" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, message", [
    ("--at", "1e999999999",
     "--at: not a number of seconds since the Unix epoch that PostgreSQL's numeric holds: '1e999999999'"),
    ("--max-disqualify-share", "1e-99999", "--max-disqualify-share: not a number that PostgreSQL's numeric holds: "
     "'1e-99999'"),
    ("--at", "1e131071", "invalid snapshot time 1.000000e+131071"),  # held: the database's rule names it, briefly
    ("--max-disqualify-share", "1e131071", "max_disqualify_share must be between 0 and 1, got 1.000000e+131071"),
])
def test_cli_names_an_option_beyond_numeric(enabled, db_url, tmp_path, capsys, option, value, message):
    path = write_snapshot(tmp_path / f"{AUD}.csv.gz", [("m0", BASE + 20)])
    assert run(db_url, option, value, str(path)) == 1
    err = capsys.readouterr().err
    assert f"error: {message}\n" in err and "overflows" not in err


def test_snapshot_diff_checks_its_limit(enabled):
    apply(enabled, [ev("a", True, 10), ev("b", True, 10)])
    import_rows(enabled, snapshot_payload([("a", BASE + 20)]), AUD, dry_run=True)
    assert len(snapshot_diff(enabled, 0)) == 0 and len(snapshot_diff(enabled, 1)) == 1
    for limit in (-1, 100001):
        with pytest.raises(psycopg.Error) as caught:
            snapshot_diff(enabled, limit)
        assert caught.value.diag.sqlstate == "PT010" and caught.value.diag.message_detail == "field: diff_limit"


def test_snapshot_diff_and_share_defaults_are_sql_s(enabled):
    # NULL is the default: 50 changes listed; a share of 0.5 (half the members may go, not more)
    apply(enabled, [ev(f"m{i:03}", True, 10) for i in range(120)])
    payload = snapshot_payload([(f"m{i:03}", BASE + 20) for i in range(60)])
    assert import_rows(enabled, payload, AUD, dry_run=True).to_disqualify == 60
    assert len(snapshot_diff(enabled)) == 50 and len(snapshot_diff(enabled, None)) == 50
    payload = snapshot_payload([(f"m{i:03}", BASE + 20) for i in range(59)])
    assert import_rows(enabled, payload, AUD, dry_run=True).refused_by == ("snapshot_disqualifies_too_many",)
    with pytest.raises(SnapshotRefused) as caught:
        import_rows(enabled, payload, AUD)
    assert caught.value.sqlstate == "PT023"


def test_members_whose_qualify_ran_out_are_neither_counted_nor_disqualified(enabled):
    """An audience with a ttl: qualifies that expired (the sweeper has not recorded them yet) are no members,
    so the guard compares the snapshot with the live members only."""
    enabled.execute("SELECT passthrough.create_audience('a', %s, p_ttl => interval '1 day')", (AUD,))
    now = scalar(enabled, "SELECT floor(extract(epoch FROM now()))")
    apply(enabled, [ev(f"old{i}", True, 10) for i in range(8)]  # long expired
          + [Event("fs_user_id", f"live{i}", AUD, True, now - 60) for i in range(2)])
    result = import_rows(enabled, snapshot_payload([("live0", now), ("live1", now)]), AUD)
    assert (result.members_before, result.to_disqualify, result.unchanged, result.applied) == (2, 0, 2, True)
    # dropping one of the two live members is 50%: allowed; the expired ones stay out
    result = import_rows(enabled, snapshot_payload([("live0", now + 1)]), AUD)
    assert (result.members_before, result.to_disqualify, result.applied) == (2, 1, True)
    assert scalar(enabled, "SELECT size FROM passthrough.get_audience('a')") == 1
    # no disqualify was written for the expired members: their only event is their qualify
    assert scalar(enabled, "SELECT count(*) FROM passthrough.events e JOIN passthrough.external_audiences x"
                  " ON x.id = e.audience_key WHERE x.external_id = %s AND e.identifier LIKE 'old%%'", (AUD,)) == 8


def test_cli_suggests_audience_once_for_a_file_named_after_another_audience(enabled, db_url, tmp_path, capsys):
    path = tmp_path / "aud-z.csv"
    path.write_text("type,action,audience_id,ts,email\n"
                    + "".join(f"passthrough,qualify,aud-y,1700000000,v{i}\n" for i in range(150)))
    assert run(db_url, "--dry-run", str(path)) == 1
    assert capsys.readouterr().err.splitlines()[1:] == [
        f'error: {path}: snapshot of "aud-z" refused: its rows are of audience "aud-y"',
        'detail: All 150 rows name audience "aud-y" in their audience_id; a snapshot\'s rows name the audience it is '
        "imported as.",
        'hint: If they are the members of "aud-y", import them as its snapshot: passthrough import --audience aud-y '
        "FILE (without --audience, a file's name is its audience), POST to its /v3/audiences/{audience_id}/snapshot, "
        "or passthrough.import_snapshot('aud-y').",
    ]
    assert run(db_url, "--audience", "aud-y", str(path)) == 0
    assert "150 memberships changed" in capsys.readouterr().out


def test_cli_progress_says_dry_run_on_a_dry_run(enabled, db_url, tmp_path, capsys):
    path = write_snapshot(tmp_path / f"{AUD}.csv.gz", [("m0", BASE + 20)])
    assert cli.main(["import", "--database-url", db_url, "--dry-run", str(path)]) == 0
    assert f"{AUD}: dry run" in capsys.readouterr().err
    assert cli.main(["import", "--database-url", db_url, str(path)]) == 0
    err = capsys.readouterr().err
    assert f"{AUD}: apply" in err and "dry run" not in err


def test_cli_reports_invalid_rows_by_line(enabled, db_url, tmp_path, capsys):
    path = tmp_path / "aud-z.csv"
    path.write_text("type,action,audience_id,ts,email\npassthrough,qualify,aud-z,1700000000,v1\n"
                    "passthrough,qualify,aud-y,1700000000,v2\n")
    assert run(db_url, str(path)) == 1
    err = capsys.readouterr().err
    assert f'{path}:3: data.audience_id: this is a snapshot of "aud-z", got "aud-y"' in err
    assert scalar(enabled, "SELECT count(*) FROM passthrough.memberships") == 0
