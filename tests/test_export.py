"""passthrough export (pyapp/ingest/export.py): a segment's members as the snapshot files passthrough import reads,
and the round trip through them into a fresh database."""

from __future__ import annotations

import csv
import gzip
from decimal import Decimal
from pathlib import Path

import pytest
from reference_model import Event, MembershipModel, dumps
from sqlhelpers import rows

from pyapp import cli
from pyapp.ingest import export
from pyapp.db import connect

BASE = Decimal(1_700_000_000)
EVENTS = [
    Event("fs_user_id", "u1", "crm-vip", True, BASE),
    Event("fs_user_id", "u2", "crm-vip", True, BASE + Decimal("1.5")),
    Event("fs_user_id", "u2", "crm-vip", False, BASE + 3),
    Event("email", "a,\"b\"@x", "crm-vip", True, BASE + 2),  # CSV quoting
    Event("fs_user_id", "u3", "crm-vip", True, BASE + 4),
    Event("fs_user_id", "u1", "crm-other", True, BASE),
]
MEMBERS = ("SELECT x.external_id, t.name, m.identifier FROM passthrough.memberships m"
           " JOIN passthrough.identifier_types t ON t.id = m.identifier_type_id"
           " JOIN passthrough.external_audiences x ON x.id = m.audience_key WHERE m.qualified ORDER BY 1, 2, 3")


def setup(url: str, events=EVENTS) -> None:
    with connect(url, autocommit=True) as c:
        c.execute("SELECT passthrough.enable()")
        c.execute("SELECT passthrough.create_audience('vip', 'crm-vip')")
        c.execute("SELECT passthrough.create_audience('other', 'crm-other')")
        if events:
            c.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps([e.as_json() for e in events]),))


def read(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.reader(f))


def members_of(model: MembershipModel) -> list[tuple]:
    return sorted((a, t, i) for (t, i, a), (_, q) in model.state.items() if q)


def test_one_file_per_identifier_type_each_with_when_its_members_qualified(db_url, tmp_path, capsys):
    setup(db_url)
    assert cli.main(["export", "vip", "--database-url", db_url, "--quiet", "-o", str(tmp_path / "crm-vip.csv.gz")]) == 0
    assert read(tmp_path / "fs_user_id" / "crm-vip.csv.gz") == [
        ["type", "action", "audience_id", "ts", "fs_user_id"],
        ["passthrough", "qualify", "crm-vip", "1700000000", "u1"],
        ["passthrough", "qualify", "crm-vip", "1700000004", "u3"],
    ]
    assert read(tmp_path / "email" / "crm-vip.csv.gz") == [
        ["type", "action", "audience_id", "ts", "email"], ["passthrough", "qualify", "crm-vip", "1700000002", 'a,"b"@x']]
    out = capsys.readouterr().out
    assert f"{tmp_path / 'fs_user_id' / 'crm-vip.csv.gz'}: 2 members of vip (fs_user_id)" in out
    # the files were spooled beside the output, then moved: nothing else is left
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "email", "email/crm-vip.csv.gz", "fs_user_id", "fs_user_id/crm-vip.csv.gz"]


def test_the_round_trip_into_a_fresh_database_keeps_every_membership(db_url, make_database, migrated_template,
                                                                      tmp_path, monkeypatch):
    setup(db_url)
    monkeypatch.chdir(tmp_path)
    for segment in ("vip", "other"):
        assert cli.main(["export", segment, "--database-url", db_url, "--quiet"]) == 0
    files = sorted(str(p) for p in tmp_path.rglob("*.csv.gz"))
    assert files == [str(tmp_path / "crm-other.csv.gz"), str(tmp_path / "email" / "crm-vip.csv.gz"),
                     str(tmp_path / "fs_user_id" / "crm-vip.csv.gz")]
    fresh = make_database(template=migrated_template)
    setup(fresh, events=[])
    assert cli.main(["import", "--database-url", fresh, "--quiet", *files]) == 0  # the two vip files: one snapshot
    model = MembershipModel()
    model.apply(EVENTS)
    with connect(db_url) as a, connect(fresh) as b:
        assert rows(a, MEMBERS) == rows(b, MEMBERS) == members_of(model)
        # the exported ts are logged as the qualify events: the past before T reads the same
        for t in (BASE, BASE + 2):
            ask = ("SELECT name FROM passthrough.customer_audiences_at('fs_user_id', 'u1', NULL, to_timestamp(%s))")
            assert rows(a, ask, (t,)) == rows(b, ask, (t,)) == [("other",), ("vip",)]


def test_at_a_past_instant(db_url, tmp_path):
    setup(db_url)
    path = tmp_path / "crm-vip.csv.gz"
    assert cli.main(["export", "vip", "--database-url", db_url, "--quiet", "--at", str(BASE + 2), "-o", str(path)]) == 0
    model = MembershipModel()
    model.apply([e for e in EVENTS if e.ts <= BASE + 2])
    assert sorted(r[4] for r in read(tmp_path / "fs_user_id" / "crm-vip.csv.gz")[1:]) == [
        i for a, t, i in members_of(model) if a == "crm-vip" and t == "fs_user_id"]


def test_more_than_a_page_of_one_type(db_url, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "PAGE", 2)
    setup(db_url)
    path = tmp_path / "crm-vip.csv.gz"
    with connect(db_url, autocommit=True) as c:
        c.execute("SELECT passthrough.apply_events(%s::jsonb)", (dumps(
            [Event("fs_user_id", f"p{n}", "crm-vip", True, BASE).as_json() for n in range(5)]),))
    assert cli.main(["export", "vip", "--database-url", db_url, "--quiet", "-o", str(path)]) == 0
    assert [r[4] for r in read(tmp_path / "fs_user_id" / "crm-vip.csv.gz")[1:]] == ["p0", "p1", "p2", "p3", "p4",
                                                                                    "u1", "u3"]


@pytest.mark.parametrize("args, message", [
    (["nope"], "audience 'nope' does not exist"),
    (["vip", "--at", "soon"], "--at: not a number of seconds since the Unix epoch: 'soon'"),
    (["vip", "--at", "1e999999999"],  # numeric would overflow: the database's bare 22003, before
     "--at: not a number of seconds since the Unix epoch that PostgreSQL's numeric holds: '1e999999999'"),
    (["vip", "--at=-1e131071"], "at must be seconds since the Unix epoch, got -1.000000e+131071"),
])
def test_errors_are_one_line(db_url, capsys, args, message, tmp_path, monkeypatch):
    setup(db_url)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", *args, "--database-url", db_url, "--quiet"]) == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no file, no spool left behind
