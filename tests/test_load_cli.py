"""``passthrough load``: formats, gzip, stdin, parallel writers, refusal report, rejects, replay."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from pyapp import cli
from pyapp.cli.etl import estimated_events
from pyapp.ingest.writers import LoadSummary, load_files
from reference_model import Event, MembershipModel, dumps
from sqlhelpers import rows, scalar
from test_apply_events_properties import sql_sizes, sql_state

BASE = Decimal(1_700_000_000)


def make_events(n: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    events = []
    for _ in range(n):
        ts = BASE + Decimal(rng.randrange(0, 50_000_000)) / 1_000_000
        events.append(Event(rng.choice(["fs_user_id", "email"]), f"u{rng.randrange(60)}", f"aud-{rng.randrange(5)}",
                            rng.random() < 0.6, ts))
    return events + rng.sample(events, n // 10)  # duplicates


def model_of(events) -> MembershipModel:
    model = MembershipModel()
    model.apply(events)
    return model


def write_ndjson(path: Path, events) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for e in events:
            f.write(dumps(e.as_json()) + "\n")
    return path


def write_json(path: Path, events) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(dumps([e.as_json() for e in events]))
    return path


def write_csv(path: Path, events, identifier_type: str) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["type", "action", "audience_id", "ts", identifier_type])
        for e in events:
            assert e.identifier_type == identifier_type
            w.writerow(["passthrough", "qualify" if e.qualified else "disqualify", e.audience_id, str(e.ts), e.identifier])
    return path


def run(db_url: str, *args: str) -> int:
    return cli.main(["load", "--database-url", db_url, "--quiet", *args])


@pytest.fixture
def enabled(conn):
    conn.execute("SELECT passthrough.enable()")
    return conn


def assert_model_state(conn, events) -> None:
    model = model_of(events)
    assert sql_state(conn) == model.state
    assert sql_sizes(conn) == model.sizes()


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_ndjson_json_and_csv_files(enabled, db_url, tmp_path, capsys, gz):
    events = make_events(600)
    ext = ".gz" if gz else ""
    fs = [e for e in events if e.identifier_type == "fs_user_id"]
    vu = [e for e in events if e.identifier_type == "email"]
    third = len(events) // 3
    files = [
        write_ndjson(tmp_path / f"a.ndjson{ext}", events[:third]),
        write_json(tmp_path / f"b.json{ext}", events[third:2 * third]),
        write_csv(tmp_path / f"c.csv{ext}", [e for e in events[2 * third:] if e.identifier_type == "fs_user_id"],
                  "fs_user_id"),
        write_csv(tmp_path / f"d.csv{ext}", [e for e in events[2 * third:] if e.identifier_type == "email"], "email"),
    ]
    assert fs and vu
    assert run(db_url, *map(str, files)) == 0
    out = capsys.readouterr().out
    assert f"load done: {len(events):,} rows read from 4 inputs" in out
    assert_model_state(enabled, events)


# ts as a CDP may write them: more digits than a float keeps, beyond 64 bits, exponents, just below a half
EXACT_TS = ["1700000000.020818353", "1700000000.0000014999999999999999999999", "1700000000.9999995",
            "17000000000000000000E-10", "1.7000000000000005E9", "1700000000"]
# the microsecond each is, worked out by hand (half away from zero, as passthrough._ts_from_seconds rounds)
EXACT_US = [1_700_000_000_020_818, 1_700_000_000_000_001, 1_700_000_001_000_000, 1_700_000_000_000_000,
            1_700_000_000_000_001, 1_700_000_000_000_000]


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_a_ts_keeps_every_digit_it_was_written_with(enabled, db_url, tmp_path, fmt):
    """The loader reads a ts as PostgreSQL's jsonb does (the HTTP path): exactly, never through a float."""
    events = [f'{{"type":"passthrough","action":"qualify","identifiers":{{"fs_user_id":"u{i}"}},'
              f'"data":{{"audience_id":"aud-x","ts":{ts}}}}}' for i, ts in enumerate(EXACT_TS)]
    text = "\n".join(events) if fmt == "ndjson" else "[" + ",".join(events) + "]"
    path = tmp_path / f"exact.{fmt}"
    path.write_text(text)
    assert run(db_url, str(path)) == 0
    loaded = rows(enabled, "SELECT identifier, (extract(epoch FROM event_ts) * 1000000)::bigint"
                           " FROM passthrough.memberships ORDER BY identifier")
    assert loaded == sorted((f"u{i}", us) for i, us in enumerate(EXACT_US))
    enabled.execute("SELECT * FROM passthrough.apply_events(%s::jsonb)", ("[" + ",".join(
        e.replace('"aud-x"', '"aud-y"') for e in events) + "]",))
    assert rows(enabled, "SELECT identifier, (extract(epoch FROM event_ts) * 1000000)::bigint FROM"
                         " passthrough.memberships m JOIN passthrough.external_audiences e ON e.id = m.audience_key"
                         " WHERE e.external_id = 'aud-y' ORDER BY identifier") == loaded


def test_format_is_sniffed_without_an_extension(enabled, db_url, tmp_path):
    events = make_events(50)
    a = write_ndjson(tmp_path / "a.gz", events[:20])  # gzip, then NDJSON by its first line
    b = write_json(tmp_path / "b.data", events[20:])
    assert run(db_url, str(a), str(b)) == 0
    assert_model_state(enabled, events)


def test_stdin(enabled, db_url, monkeypatch):
    events = make_events(200)
    body = "".join(dumps(e.as_json()) + "\n" for e in events).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(body))))
    assert run(db_url, "-") == 0
    assert_model_state(enabled, events)


@pytest.mark.parametrize("writers", [1, 3])
def test_parallel_writers_reach_the_model_state(enabled, db_url, tmp_path, writers):
    events = make_events(3000, seed=writers)
    path = write_ndjson(tmp_path / "e.ndjson", events)
    summary = load_files(db_url, [str(path)], writers=writers, batch_size=200)
    assert summary.rows == summary.accepted == len(events)
    assert summary.batches >= len(events) // 200
    assert_model_state(enabled, events)
    # every batch was written by one writer: the identifiers of two writers never mix in a batch
    assert scalar(enabled, "SELECT count(*) FROM passthrough.batches") == summary.batches


def test_refused_batch_names_file_and_line_and_replay_converges(enabled, db_url, tmp_path, capsys):
    """A load that dies midway (here: a bad row) and is rerun from the start reaches the model state."""
    events = make_events(1000, seed=3)
    path = tmp_path / "e.ndjson"
    lines = [dumps(e.as_json()) for e in events]
    bad = lines[:700] + ['{"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "x"}}'] + lines[700:]
    path.write_text("\n".join(bad) + "\n")
    assert run(db_url, "--writers", "2", "--batch-size", "100", str(path)) == 1
    err = capsys.readouterr().err
    assert f"{path}:701: data.audience_id: is required" in err
    assert "run the same load again" in err
    partial = scalar(enabled, "SELECT count(*) FROM passthrough.events")
    assert 0 < partial < len(events)  # batches before the failure were committed

    path.write_text("\n".join(lines) + "\n")  # fixed input, loaded again from the start
    assert run(db_url, "--writers", "2", "--batch-size", "100", str(path)) == 0
    assert_model_state(enabled, events)


def test_replay_of_a_prefix_then_everything_converges(enabled, db_url, tmp_path):
    events = make_events(800, seed=11)
    prefix = write_ndjson(tmp_path / "prefix.ndjson", events[:333])  # the crash: only a prefix got in
    full = write_ndjson(tmp_path / "full.ndjson", events)
    assert run(db_url, str(prefix)) == 0
    assert run(db_url, "--writers", "3", str(full)) == 0
    assert run(db_url, str(full)) == 0  # and once more: nothing changes
    assert_model_state(enabled, events)
    assert scalar(enabled, "SELECT count(*) FROM passthrough.events") == 333 + 2 * len(events)


def test_rejects_option(enabled, db_url, tmp_path, capsys):
    path = tmp_path / "e.ndjson"
    good = {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u1"},
            "data": {"audience_id": "a", "ts": 1_700_000_000}}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "action": "maybe"}) + "\nnot json\n")
    assert run(db_url, "--rejects", str(path)) == 0
    out = capsys.readouterr().out
    assert "1 event applied" in out and "2 rejected" in out
    kept = rows(enabled, "SELECT load_id, row_no, problems[1] FROM passthrough.load_rejects ORDER BY row_no")
    assert kept[0][1:] == (2, 'action: must be "qualify" or "disqualify", got "maybe"')
    assert kept[1][1] == 3 and kept[1][2].startswith("event: not valid JSON")
    load_id = kept[0][0]
    assert f"rejected rows: passthrough rejects {load_id}\n" in out

    # passthrough rejects LOAD_ID: the rows, piped as a whole table, or as JSON
    assert cli.main(["rejects", str(load_id), "--database-url", db_url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["load_id", "row_no", "problems", "type"]
    assert table[2].split()[:2] == [str(load_id), "2"]
    assert 'action: must be "qualify" or "disqualify", got "maybe"' in table[2] and "maybe" in table[2]
    assert table[3].split()[:2] == [str(load_id), "3"] and "event: not valid JSON" in table[3]
    assert len(table) == 4
    assert cli.main(["rejects", str(load_id), "--json", "--database-url", db_url]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["row_no"], r["action"], r["identifier"]) for r in listed] == [(2, "maybe", "u1"), (3, None, None)]
    assert cli.main(["rejects", str(load_id + 1000), "--database-url", db_url]) == 0
    assert capsys.readouterr().out == f"no rejected rows for load {load_id + 1000}\n"


NUL = 'must not contain "\\u0000" (NUL), which PostgreSQL text cannot hold'
HEAD = '{"type":"passthrough","action":"qualify","identifiers":'


def test_values_postgresql_cannot_hold_set_only_their_row_aside(enabled, db_url, tmp_path, capsys):
    """A NUL in a string, or a number numeric cannot hold, would make COPY refuse the whole batch with no row
    named: each is its row's problem instead, naming the field, and the other rows apply."""
    lines = [  # (raw NDJSON line, its first problem; None: valid)
        (HEAD + '{"fs_user_id":"u1"},"data":{"audience_id":"a","ts":1.7e9}}', None),
        (HEAD + '{"fs_user_id":"u2"},"data":{"audience_id":"a","ts":1e999999999}}',
         "data.ts: must be seconds since the Unix epoch, got 1e999999999, more digits than PostgreSQL's numeric holds"),
        (HEAD + '{"fs_user_id":"u3"},"data":{"audience_id":"a","ts":1.5e-16383}}',
         "data.ts: must be seconds since the Unix epoch, got 1.5e-16383, more digits than PostgreSQL's numeric holds"),
        (HEAD + '{"fs_user_id":"a\\u0000b"},"data":{"audience_id":"a","ts":1700000000}}',
         f'identifiers.fs_user_id: {NUL}, got "a\\u0000b"'),
        ('{"type":"passthrough\\u0000","action":"qualify","identifiers":{"fs_user_id":"u5"},'
         '"data":{"audience_id":"a"}}', f'type: {NUL}, got "passthrough\\u0000"'),
        ('{"type":"passthrough","action":"\\u0000qualify","identifiers":{"fs_user_id":"u6"},'
         '"data":{"audience_id":"a"}}', f'action: {NUL}, got "\\u0000qualify"'),
        (HEAD + '{"fs_user_id":"u7"},"data":{"audience_id":"a\\u0000"}}', f'data.audience_id: {NUL}, got "a\\u0000"'),
        (HEAD + '{"fs_user_id":"u8"},"data":{"audience_id":"a","idempotence_id":"\\u0000"}}',
         f'data.idempotence_id: {NUL}, got "\\u0000"'),
        (HEAD + '{"fs_\\u0000id":"u9"},"data":{"audience_id":"a"}}', f'identifiers: a key {NUL}, got "fs_\\u0000id"'),
        (HEAD + '{"fs_user_id":"u10","email":"x\\u0000"},"data":{"audience_id":"a"}}',
         f'identifiers: a string {NUL}, got "x\\u0000"'),
        (HEAD + '{"fs_user_id":"u11","email":1e999999999},"data":{"audience_id":"a"}}',
         "identifiers: the number 1e999999999 has more digits than jsonb holds"),
        (HEAD + '{"fs_user_id":"u12"},"data":{"audience_id":"a","ts":1700000000.5}}', None),
    ]
    path = tmp_path / "e.ndjson"
    path.write_text("".join(line + "\n" for line, _ in lines))
    for writers in ("1", "2"):
        assert run(db_url, "--validate-only", "--writers", writers, str(path)) == 1
        listed = capsys.readouterr().out.splitlines()[2:]
        expected = [(n, problem) for n, (_, problem) in enumerate(lines, 1) if problem is not None]
        assert [line.split(": ", 1)[0] for line in listed] == [f"  {path}:{n}" for n, _ in expected]
        for line, (_, problem) in zip(listed, expected):
            assert line.split(": ", 1)[1].startswith(problem), line
    assert run(db_url, "--rejects", "--writers", "2", str(path)) == 0
    assert "2 events applied" in capsys.readouterr().out
    assert rows(enabled, "SELECT identifier, qualified FROM passthrough.memberships ORDER BY 1") == [
        ("u1", True), ("u12", True)]
    kept = rows(enabled, "SELECT row_no, problems[1], identifier FROM passthrough.load_rejects ORDER BY row_no")
    assert [(row_no, problem) for row_no, problem, _ in kept] == [
        (n, problem) for n, (_, problem) in enumerate(lines, 1) if problem is not None]
    assert kept[2][2] == "a\\u0000b"  # the value as it was sent, its NUL written as the JSON escape


def test_csv_values_postgresql_cannot_hold_set_only_their_row_aside(enabled, db_url, tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("type,action,audience_id,ts,fs_user_id\npassthrough,qualify,a,1e999999999,u1\n"
                    "passthrough,qualify,a,1700000000,u\x002\npassthrough,qualify,a,1700000000,u3\n")
    assert run(db_url, "--rejects", str(path)) == 0
    assert rows(enabled, "SELECT identifier FROM passthrough.memberships") == [("u3",)]
    assert rows(enabled, "SELECT row_no, problems FROM passthrough.load_rejects ORDER BY row_no") == [
        (2, ["data.ts: must be seconds since the Unix epoch, got 1e999999999, more digits than PostgreSQL's numeric "
             "holds"]),
        (3, [f'identifiers.fs_user_id: {NUL}, got "u\\u00002"']),
    ]


def test_bytes_that_are_not_utf8_set_only_their_row_aside(enabled, db_url, tmp_path, capsys):
    """A file read as UTF-8 stopped at its first byte that was not (UnicodeDecodeError, no line named, nothing
    after it loaded): now that line or value is invalid, naming the bytes, and the rest loads."""
    ndjson = tmp_path / "e.ndjson"
    ndjson.write_bytes(HEAD.encode() + b'{"fs_user_id":"u1"},"data":{"audience_id":"a","ts":1700000000}}\n'
                       + HEAD.encode() + b'{"fs_user_id":"u\xff2"},"data":{"audience_id":"a","ts":1700000000}}\n'
                       + HEAD.encode() + b'{"fs_user_id":"u3"},"data":{"audience_id":"a","ts":1700000000}}\n')
    csv_file = tmp_path / "x.csv"
    csv_file.write_bytes(b"type,action,audience_id,ts,fs_user_id\npassthrough,qualify,a,1700000000,c\xfe\xfd1\n"
                         b"passthrough,qualify,a\xc3,1700000000,c2\npassthrough,qualify,a,1700000000,c3\n")
    assert run(db_url, "--rejects", str(ndjson), str(csv_file)) == 0
    assert "3 events applied" in capsys.readouterr().out
    assert rows(enabled, "SELECT identifier FROM passthrough.memberships ORDER BY 1") == [("c3",), ("u1",), ("u3",)]
    assert rows(enabled, "SELECT row_no, problems[1], identifier, audience_id FROM passthrough.load_rejects "
                         "ORDER BY row_no") == [
        (2, "event: must be UTF-8 text, holds the bytes ff", None, None),
        (5, "identifiers.fs_user_id: must be UTF-8 text, holds the bytes fe fd", "c\\xfe\\xfd1", "a"),  # file 2, line 2
        (6, "data.audience_id: must be UTF-8 text, holds the bytes c3", "c2", "a\\xc3"),
    ]
    array = tmp_path / "a.json"
    array.write_bytes(b'[\n{"type": "passthrough"},\n{"type": "pass\xffthrough"}]')
    assert run(db_url, str(array)) == 1
    assert f"{array}: not UTF-8 text: line 3 holds the bytes ff" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".ndjson", ".csv", ".json", ".ndjson.gz"])
def test_a_byte_order_mark_is_not_part_of_the_first_line(enabled, db_url, tmp_path, suffix):
    """Excel's "CSV UTF-8" and PowerShell write one: the first line's JSON, or the header's first name, held it."""
    events = make_events(30)
    plain = tmp_path / f"e{suffix.removesuffix('.gz')}"
    if plain.suffix == ".csv":
        events = [e for e in events if e.identifier_type == "fs_user_id"]
        write_csv(plain, events, "fs_user_id")
    else:
        {".ndjson": write_ndjson, ".json": write_json}[plain.suffix](plain, events)
    data = b"\xef\xbb\xbf" + plain.read_bytes()
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    assert run(db_url, str(path)) == 0
    assert_model_state(enabled, events)


def test_a_huge_ts_is_named_briefly(enabled, db_url, tmp_path, capsys):
    """numeric holds 131,072 digits; SQL's message shows such a ts in scientific notation, not digit by digit."""
    path = tmp_path / "e.ndjson"
    path.write_text(HEAD + '{"fs_user_id":"u1"},"data":{"audience_id":"a","ts":1e131071}}\n'
                    + HEAD + '{"fs_user_id":"u2"},"data":{"audience_id":"a","ts":-9.5e131071}}\n')
    assert run(db_url, "--validate-only", str(path)) == 1
    assert capsys.readouterr().out.splitlines()[2:] == [
        f"  {path}:1: data.ts: 1.000000e+131071 is later than the server clock allows (now + max_future_skew)",
        f"  {path}:2: data.ts: must be seconds since the Unix epoch, on or after 2000-01-01 (946684800), got "
        "-9.500000e+131071",
    ]


def test_validate_only_changes_nothing_and_lists_every_invalid_row(enabled, db_url, tmp_path, capsys):
    path = tmp_path / "e.ndjson"
    good = {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u1"},
            "data": {"audience_id": "new-audience", "ts": 1_700_000_000}}
    lines = [good, {**good, "action": "maybe"}, {**good, "identifiers": {"fs_user_id": "u2"}},
             {**good, "data": {"audience_id": "new-audience", "ts": "soon"}}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    before = sql_state(enabled), scalar(enabled, "SELECT count(*) FROM passthrough.events")
    assert run(db_url, "--validate-only", "--batch-size", "2", str(path)) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == [
        out.splitlines()[0],
        "invalid rows (file:line: problems):",
        f'  {path}:2: action: must be "qualify" or "disqualify", got "maybe"',
        f'  {path}:4: data.ts: must be a number of seconds since the Unix epoch, got string',
    ]
    assert out.startswith("validated: 4 rows read from 1 input in ")
    assert out.splitlines()[0].endswith(": 2 valid events, 0 ignored, 2 invalid rows; nothing was changed")
    assert (sql_state(enabled), scalar(enabled, "SELECT count(*) FROM passthrough.events")) == before
    for table in ("batches", "load_rejects", "external_audiences"):
        assert scalar(enabled, f"SELECT count(*) FROM passthrough.{table}") == 0, table

    path.write_text(json.dumps(good) + "\n")
    assert run(db_url, "--validate-only", str(path)) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(
        ": 1 valid event, 0 ignored, 0 invalid rows; nothing was changed")
    assert scalar(enabled, "SELECT count(*) FROM passthrough.batches") == 0


def test_progress_counts_events_applied_up_to_the_total(enabled, db_url, tmp_path):
    events = make_events(400)
    path = write_ndjson(tmp_path / "e.ndjson", events)
    seen = []
    load_files(db_url, [str(path)], writers=2, batch_size=50,
               on_progress=lambda summary, read: seen.append((summary.applied, summary.reading, summary.rows)))
    applied = [done for done, _, _ in seen]
    assert applied == sorted(applied)  # never goes back
    assert seen[-1] == (len(events), False, len(events))  # the last report: every event applied, reading done


def test_progress_bar_ends_at_every_event_applied(enabled, db_url, tmp_path, capsys):
    path = write_ndjson(tmp_path / "e.ndjson", make_events(400))
    assert cli.main(["load", "--database-url", db_url, "--batch-size", "50", str(path)]) == 0
    err = capsys.readouterr().err
    assert "440 events applied" in err and "100%" in err


def test_estimated_events():
    summary = LoadSummary(rows=100)
    assert estimated_events(summary, 1_000, 4_000) == 400  # a quarter of the bytes held 100 rows
    assert estimated_events(summary, 1_000, None) is None  # stdin
    assert estimated_events(summary, 0, 4_000) is None
    assert estimated_events(summary, 4_000, 4_000) == 100
    summary.reading = False
    assert estimated_events(summary, 1_000, 4_000) == 100  # read to the end: the rows read are the total
    assert estimated_events(summary, 1_000, None) == 100


def test_csv_header_must_have_one_identifier_column(enabled, db_url, tmp_path, capsys):
    path = tmp_path / "x.csv"
    path.write_text("type,action,audience_id,ts,fs_user_id,vuid\n")
    assert run(db_url, str(path)) == 1
    assert "exactly one identifier column" in capsys.readouterr().err
    path.write_text("type,action,ts,fs_user_id\n")
    assert run(db_url, str(path)) == 1
    assert "missing audience_id" in capsys.readouterr().err


def test_csv_values_are_checked_by_the_same_rules(enabled, db_url, tmp_path, capsys):
    path = tmp_path / "x.csv"
    path.write_text("type,action,audience_id,ts,fs_user_id\npassthrough,qualify,a,1700000000,u1\n"
                    "passthrough,qualify,a,soon,u2\npassthrough,qualify,,1700000000,u3\n")
    assert run(db_url, str(path)) == 1
    err = capsys.readouterr().err
    assert f'{path}:3: data.ts: must be a number of seconds since the Unix epoch, got "soon"' in err
    assert f"{path}:4: data.audience_id: is required" in err
    assert scalar(enabled, "SELECT count(*) FROM passthrough.memberships") == 0


def test_missing_file_is_a_usage_error(db_url, capsys):
    assert run(db_url, "/nonexistent/file.ndjson") == 1
    assert "no such file" in capsys.readouterr().err


def _row_by_row(path: str, base: int, writers: int) -> tuple[list[list[str]], int, int]:
    from pyapp.ingest.formats import read_records
    from pyapp.ingest.staging import format_row, route

    out: list[list[str]] = [[] for _ in range(writers)]
    count = last = 0
    for line, row in read_records(path):
        out[route(row.identifier, writers)].append(format_row(base + line, row))
        count, last = count + 1, line
    return out, count, last


def _chunked(path: str, base: int, writers: int) -> tuple[list[list[str]], int, int]:
    from pyapp.ingest.chunks import routed_copy_chunks

    out: list[list[str]] = [[] for _ in range(writers)]
    count = last = 0
    for chunk in routed_copy_chunks(path, base, writers):
        for index, lines in enumerate(chunk.lines):
            out[index].extend(lines)
        count += chunk.records
        last = chunk.last_line if chunk.records else last
    return out, count, last


@pytest.mark.parametrize("gz", [False, True])
def test_copy_chunks_are_the_row_by_row_copy_lines(tmp_path, gz):
    """The NDJSON fast path formats exactly what event_to_row + format_row + route give, odd lines included."""
    rng = random.Random(3)
    odd = [None, "x", "a\tb", "a\\b", "é\u2028", "", 1, 1.5, 10**30, 1e300, True, [], {}, "\ud800", "q\"uote"]
    lines = []
    for _ in range(6000):
        if rng.random() < 0.03:
            lines.append(rng.choice(["", "   ", "not json", "[1]", "null", '{"type":', "\t{}"]))
            continue
        good = {"type": "passthrough", "action": "qualify", "audience_id": "aud_1",
                "ts": rng.choice([1.25, 1700000000.123456, 17, 10**20]), "idempotence_id": "id"}
        pick = lambda k: good[k] if rng.random() < 0.8 else rng.choice(odd)  # noqa: E731
        event = {k: pick(k) for k in ("type", "action") if rng.random() < 0.9}
        if rng.random() < 0.95:
            ids = ({"fs_user_id": f"user-{rng.randrange(500)}"} if rng.random() < 0.85
                   else {f"k{j}": rng.choice(odd) for j in range(rng.randrange(3))})
            event["identifiers"] = ids if rng.random() < 0.97 else rng.choice(odd)
        if rng.random() < 0.95:
            data = {k: pick(k) for k in ("audience_id", "ts", "idempotence_id") if rng.random() < 0.9}
            event["data"] = data if rng.random() < 0.97 else rng.choice(odd)
        text = json.dumps(event, ensure_ascii=rng.random() < 0.5)
        text = json.dumps(event) if "\ud800" in text else text
        if rng.random() < 0.1:  # numbers only raw JSON text can hold (json.dumps writes floats)
            for number in ("1.25", "1700000000.123456", "17", "100000000000000000000"):
                text = text.replace(number, rng.choice(EXACT_TS + ["1e400", "-0.0", "123456789012345678901234567890"]))
        lines.append(text)
    text = "".join(line + rng.choice(["\n"] * 8 + ["\r\n", "\r"]) for line in lines)
    path = tmp_path / ("mixed.ndjson.gz" if gz else "mixed.ndjson")
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    for writers in (1, 2, 3):
        for base in (0, 11):
            expected = _row_by_row(str(path), base, writers)
            assert expected[1] > 5000
            assert _chunked(str(path), base, writers) == expected


def test_copy_chunks_of_repeated_keys_and_extra_fields(tmp_path):
    """The fast path's decoding into the usual event shape keeps what JSON (and jsonb) mean: a repeated key's
    last value counts, other fields are ignored; any other shape formats as the general path does."""
    head = '{"type":"passthrough","action":"qualify","identifiers":'
    lines = [
        '{"type":5,"action":"qualify","type":"passthrough","identifiers":{"fs_user_id":"u1"},'
        '"data":{"audience_id":"a","ts":1700000000.5}}',
        head + '{"fs_user_id":"u2"},"data":{"audience_id":"a","ts":1700000000,"extra":[1,2]},"more":{}}',
        head + '{"fs_user_id":"u3"},"data":{"audience_id":"a","idempotence_id":null,"ts":null}}',
        head + '{"fs_user_id":"x","fs_user_id":"u4"},"data":{"audience_id":"b","idempotence_id":"i4"}}',
        head + '{"fs_user_id":"u5","vuid":"v5"},"data":{"audience_id":"a"}}',
        head + '{"fs_user_id":7},"data":{"audience_id":"a"}}',
        head + '{"fs_user_id":"u7"},"data":{"audience_id":"a","ts":true}}',
        head + '{"fs_user_id":"u8"},"data":{"audience_id":"a","idempotence_id":9}}',
    ]
    path = tmp_path / "odd.ndjson"
    path.write_text("".join(line + "\n" for line in lines))
    chunked = _chunked(str(path), 0, 1)
    assert chunked == _row_by_row(str(path), 0, 1)
    assert chunked[0][0][:4] == [
        "1\tpassthrough\tqualify\tfs_user_id\tu1\ta\t1700000000.5\t\\N\t1\t\\N\t\\N\n",
        "2\tpassthrough\tqualify\tfs_user_id\tu2\ta\t1700000000\t\\N\t1\t\\N\t\\N\n",
        "3\tpassthrough\tqualify\tfs_user_id\tu3\ta\t\\N\t\\N\t1\t\\N\t\\N\n",
        "4\tpassthrough\tqualify\tfs_user_id\tu4\tb\t\\N\ti4\t1\t\\N\t\\N\n",
    ]
    assert chunked[1:] == (8, 8)
