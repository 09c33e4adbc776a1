"""POST /v3/audiences/{audience_id}/snapshot: replace semantics over HTTP, dry run, guards, scopes, bad input,
atomicity and size limits. The semantics themselves are tested against the model in tests/test_snapshots.py."""

from __future__ import annotations

import csv
import gzip
import io
import json

import pytest
from http_helpers import json_headers
from sqlhelpers import TS, event, stored_counts

from pyapp.db import connect
from pyapp.web import ApiConfig

pytest_plugins = ["http_fixtures"]

AUD = "crm-vip"
URL = f"/v3/audiences/{AUD}/snapshot"
HEADER = ["type", "action", "audience_id", "ts", "fs_user_id"]


def snapshot_csv(members, audience=AUD, header=HEADER, action="qualify") -> bytes:
    """members: [(identifier, ts or None)] as an ODP snapshot CSV (header first)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for identifier, ts in members:
        writer.writerow(["passthrough", action, audience, "" if ts is None else ts, identifier])
    return out.getvalue().encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def headers(key, content_type="application/gzip", **extra):
    result = {"content-type": content_type, **extra}
    if key is not None:
        result["x-api-key"] = key
    return result


def post(client, key, body, params=None, content_type="application/gzip", url=URL, **extra):
    return client.post(url, params=params, headers=headers(key, content_type, **extra), content=body)


def seed(conn, members, audience=AUD):
    """members: [(identifier, qualified, ts)], applied as events."""
    events = [
        event(identifiers={"fs_user_id": i}, action="qualify" if q else "disqualify",
              data_audience_id=audience, data_ts=ts)
        for i, q, ts in members
    ]
    conn.execute("SELECT passthrough.apply_events(%s::jsonb)", (json.dumps(events),))


def state(conn, audience=AUD) -> dict[str, tuple[bool, float]]:
    """{identifier: (qualified, event_ts in seconds)} of the audience's fs_user_id members."""
    return {
        i: (q, float(ts))
        for i, q, ts in conn.execute(
            "SELECT m.identifier, m.qualified, extract(epoch FROM m.event_ts) FROM passthrough.memberships m"
            " JOIN passthrough.external_audiences x ON x.id = m.audience_key WHERE x.external_id = %s",
            (audience,),
        ).fetchall()
    }


def qualified(conn, audience=AUD) -> set[str]:
    return {i for i, (q, _) in state(conn, audience).items() if q}


def detail(response) -> dict:
    return response.json()["detail"]


@pytest.fixture
def members(enabled):
    """m0..m3 qualified at TS, in AUD."""
    seed(enabled, [(f"m{i}", True, TS) for i in range(4)])
    return enabled


def unchanged(conn, before) -> bool:
    return stored_counts(conn) == before[0] and state(conn) == before[1]


def snapshot_of(conn):
    return stored_counts(conn), state(conn)


# --------------------------------------------------------------------------- success


def test_a_snapshot_replaces_the_membership_and_is_committed_before_the_200(
    client, members, private_key, http_database_url
):
    seed(members, [("newer", True, TS + 500)])  # qualified after T, not listed: stays
    body = gz(snapshot_csv([("m0", TS + 100), ("m1", TS + 100), ("m2", None), ("new", TS + 50)]))
    response = post(client, private_key, body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result == {
        "audience_id": AUD,
        "applied": True,
        "snapshot_at": "2023-11-14T22:15:00Z",  # T: the newest ts in the file, TS + 100
        "listed": 4,
        "to_qualify": 1,
        "to_disqualify": 1,
        "unchanged": 3,
        "kept_newer": 1,
        "members_before": 4,  # as of T: "newer" joined after T
        "batch_id": result["batch_id"],
        "changed": 2,
        "refused_by": [],
        "refusal_reasons": [],
    }
    # another connection sees the import the moment the answer arrives: it was committed first
    with connect(http_database_url) as other:
        assert qualified(other) == {"m0", "m1", "m2", "new", "newer"}
        assert state(other)["m3"] == (False, TS + 100)  # disqualified as of T
        assert state(other)["m2"] == (True, TS + 100)  # a row without ts takes T
        assert other.execute("SELECT id, source, event_count FROM passthrough.batches ORDER BY id DESC LIMIT 1"
                             ).fetchone() == (result["batch_id"], "http-snapshot", 4)  # the listed rows


def test_the_snapshot_time_can_be_given(client, members, private_key):
    seed(members, [("m1", True, TS + 90)])
    body = gz(snapshot_csv([("m0", None), ("new", None)]))
    response = post(client, private_key, body, params={"at": TS + 50, "max_disqualify_share": "1"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["snapshot_at"] == "2023-11-14T22:14:10Z"
    assert (result["to_qualify"], result["to_disqualify"], result["kept_newer"]) == (1, 2, 1)
    assert qualified(members) == {"m0", "m1", "new"}  # m1's event at TS + 90 is newer than T: it stands
    assert state(members)["new"] == (True, TS + 50)


CSV = snapshot_csv([("m0", TS + 10), ("m1", TS + 10), ("x", TS + 10)])


@pytest.mark.parametrize(
    "content_type, content_encoding, body",
    [
        ("application/gzip", None, gz(CSV)),
        ("application/x-gzip", None, gz(CSV)),
        ("text/csv", None, CSV),
        ("text/csv; charset=utf-8", None, CSV),
        ("text/csv", None, gz(CSV)),  # gzip by its magic bytes
        ("application/octet-stream", None, gz(CSV)),
        ("application/octet-stream", None, CSV),
        ("text/csv", "gzip", gz(CSV)),  # gzip as the transfer encoding
        ("application/gzip", "gzip", gz(gz(CSV))),  # a gzip file, gzipped again for the transfer
        ("text/csv", None, CSV.replace(b"\n", b"\r\n")),
        ("text/csv", None, b"\xef\xbb\xbf" + CSV),  # Excel's "CSV UTF-8" starts with a byte order mark
        ("application/gzip", None, gz(b"\xef\xbb\xbf" + CSV)),
    ],
    ids=["gzip", "x-gzip", "csv", "csv charset", "csv that is gzip", "octet-stream gzip", "octet-stream csv",
         "content-encoding gzip", "gzip twice", "crlf", "byte order mark", "gzip with a byte order mark"],
)
def test_gzip_or_plain_csv_as_the_headers_or_the_magic_bytes_say(
    client, members, private_key, content_type, content_encoding, body
):
    extra = {"content-encoding": content_encoding} if content_encoding else {}
    response = post(client, private_key, body, content_type=content_type, **extra)
    assert response.status_code == 200, response.text
    assert (response.json()["listed"], response.json()["to_disqualify"]) == (3, 2)
    assert qualified(members) == {"m0", "m1", "x"}


def test_a_large_snapshot_streamed_without_content_length(client, enabled, private_key):
    seed(enabled, [(f"u{i}", True, TS) for i in range(10)])
    body = snapshot_csv([(f"u{i:06d}", TS + 10) for i in range(40_000)])  # about 1.6 MB, more than one chunk
    assert len(body) > 1 << 20

    def chunks():
        for start in range(0, len(body), 50_000):
            yield body[start:start + 50_000]

    response = post(client, private_key, chunks(), content_type="text/csv", params={"force": "true"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["listed"], result["to_qualify"], result["to_disqualify"]) == (40_000, 40_000, 10)
    count = enabled.execute("SELECT count(*) FROM passthrough.memberships WHERE qualified").fetchone()[0]
    assert count == 40_000


def test_other_identifier_types_and_columns_in_any_order(client, enabled, private_key):
    body = b"email,ts,audience_id,action,type\nv@example.com,,crm-vip,qualify,passthrough\n"
    response = post(client, private_key, body, content_type="text/csv", params={"force": "true"})
    assert response.status_code == 200, response.text
    assert enabled.execute("SELECT t.name, m.identifier FROM passthrough.memberships m"
                           " JOIN passthrough.identifier_types t ON t.id = m.identifier_type_id").fetchall() == [
        ("email", "v@example.com")]


@pytest.mark.parametrize("path_id", ["crm%2Fvip%2F2026", "crm/vip/2026"], ids=["escaped", "as-is"])
def test_an_audience_id_with_a_slash(client, enabled, private_key, path_id):
    body = snapshot_csv([("m0", TS)], audience="crm/vip/2026")
    response = post(client, private_key, body, content_type="text/csv", params={"force": "true"},
                    url=f"/v3/audiences/{path_id}/snapshot")
    assert response.status_code == 200, response.text
    assert response.json()["audience_id"] == "crm/vip/2026"
    assert qualified(enabled, "crm/vip/2026") == {"m0"}


# --------------------------------------------------------------------------- dry run


def test_a_dry_run_answers_the_diff_and_changes_nothing(client, members, private_key):
    seed(members, [("late", True, TS + 900)])
    before = snapshot_of(members)
    body = gz(snapshot_csv([("m0", TS + 100), ("new", TS + 100)]))
    response = post(client, private_key, body, params={"dry_run": "true", "force": "true"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["applied"], result["batch_id"], result["changed"]) == (False, None, 0)
    assert (result["to_qualify"], result["to_disqualify"], result["unchanged"], result["kept_newer"]) == (1, 3, 1, 1)
    assert [(d["change"], d["identifier"]) for d in result["diff"]] == [
        ("disqualify", "m1"), ("disqualify", "m2"), ("disqualify", "m3"), ("kept_newer", "late"), ("qualify", "new")]
    assert result["diff"][0] == {"change": "disqualify", "identifier_type": "fs_user_id", "identifier": "m1",
                                 "current_ts": "2023-11-14T22:13:20Z", "snapshot_ts": "2023-11-14T22:15:00Z"}
    assert result["diff"][-1]["current_ts"] is None
    assert result["diff_truncated"] is False
    assert unchanged(members, before)


def test_the_dry_run_diff_is_bounded(client, members, private_key):
    body = gz(snapshot_csv([("m0", TS + 100), ("new", TS + 100)]))
    response = post(client, private_key, body, params={"dry_run": "1", "force": "1", "diff_limit": "2"})
    assert response.status_code == 200
    assert [d["identifier"] for d in response.json()["diff"]] == ["m1", "m2"]
    assert response.json()["diff_truncated"] is True
    response = post(client, private_key, body, params={"dry_run": "true", "force": "true", "diff_limit": "0"})
    assert response.json()["diff"] == [] and response.json()["diff_truncated"] is True
    response = post(client, private_key, body, params={"dry_run": "true", "force": "true", "diff_limit": "100000"})
    # m1, m2, m3 out, new in: all four changes, nothing cut
    assert len(response.json()["diff"]) == 4 and response.json()["diff_truncated"] is False


def test_a_dry_run_works_while_passthrough_is_disabled_and_an_import_does_not(client, db, private_key):
    body = gz(snapshot_csv([("a", TS)]))
    response = post(client, private_key, body, params={"dry_run": "true"})
    assert response.status_code == 200 and response.json()["to_qualify"] == 1
    response = post(client, private_key, body)
    assert response.status_code == 403
    assert (detail(response)["code"], detail(response)["sqlstate"]) == ("passthrough_disabled", "PT002")
    assert stored_counts(db) == (0, 0, 0)


# --------------------------------------------------------------------------- guards


def test_an_empty_snapshot_is_refused_unless_forced(client, members, private_key):
    before = snapshot_of(members)
    body = gz(snapshot_csv([]))  # the header and no rows
    response = post(client, private_key, body)
    assert response.status_code == 422
    assert (detail(response)["code"], detail(response)["sqlstate"]) == ("empty_snapshot", "PT022")
    assert "refused: it is empty" in detail(response)["message"]
    assert "force=true over HTTP" in detail(response)["hint"]  # the hint names this transport's option too
    response = post(client, private_key, body, params={"dry_run": "true"})
    assert response.status_code == 200
    assert response.json()["refused_by"] == ["empty_snapshot", "snapshot_disqualifies_too_many"]
    assert response.json()["refusal_reasons"][0] == "it is empty"
    assert unchanged(members, before)
    response = post(client, private_key, body, params={"force": "true"})
    assert response.status_code == 200 and response.json()["to_disqualify"] == 4
    assert qualified(members) == set()


def test_disqualifying_more_than_the_share_is_refused_unless_allowed_or_forced(client, members, private_key):
    before = snapshot_of(members)
    body = gz(snapshot_csv([("m0", TS + 10)]))  # drops 3 of 4
    response = post(client, private_key, body)
    assert response.status_code == 422
    assert detail(response)["code"] == "snapshot_disqualifies_too_many"
    assert "would disqualify 3 of 4 members (75.0%), more than the allowed 50.0%" in detail(response)["message"]
    assert "force=true" in detail(response)["hint"] and "max_disqualify_share=" in detail(response)["hint"]
    response = post(client, private_key, body, params={"dry_run": "true"})  # a dry run shows it, and the guard
    assert response.status_code == 200
    assert (response.json()["to_disqualify"], [d["identifier"] for d in response.json()["diff"]]) == (
        3, ["m1", "m2", "m3"])
    assert (response.json()["refused_by"], response.json()["refusal_reasons"]) == (
        ["snapshot_disqualifies_too_many"], ["it would disqualify 3 of 4 members (75.0%), more than the allowed 50.0%"])
    response = post(client, private_key, body, params={"max_disqualify_share": "0.7"})
    assert response.status_code == 422 and "allowed 70.0%" in detail(response)["message"]
    assert unchanged(members, before)
    response = post(client, private_key, body, params={"max_disqualify_share": "0.75"})
    assert response.status_code == 200 and qualified(members) == {"m0"}


def test_force_overrides_the_share(client, members, private_key):
    response = post(client, private_key, gz(snapshot_csv([("m0", TS + 10)])), params={"force": "true"})
    assert response.status_code == 200
    assert (response.json()["to_disqualify"], response.json()["changed"]) == (3, 3)
    assert qualified(members) == {"m0"}


# --------------------------------------------------------------------------- keys


def test_a_public_key_is_refused_and_nothing_changes(client, members, public_key):
    before = snapshot_of(members)
    response = post(client, public_key, gz(snapshot_csv([], )), params={"force": "true"})
    assert response.status_code == 403
    assert detail(response)["code"] == "insufficient_scope"
    assert "needs a private API key" in detail(response)["message"]
    assert unchanged(members, before)


@pytest.mark.parametrize("key, code", [(None, "missing_api_key"), ("pt_private_" + "0" * 64, "invalid_api_key")])
def test_no_key_or_an_unknown_key_is_401_and_nothing_changes(client, members, key, code):
    before = snapshot_of(members)
    response = post(client, key, gz(snapshot_csv([])), params={"force": "true"})
    assert response.status_code == 401 and detail(response)["code"] == code
    assert unchanged(members, before)


def test_a_revoked_private_key_is_refused(client, members, make_key):
    key = make_key("etl", "private")
    members.execute("SELECT passthrough.revoke_api_key('etl')")
    response = post(client, key, gz(snapshot_csv([])), params={"force": "true"})
    assert response.status_code == 401 and detail(response)["code"] == "invalid_api_key"
    assert len(qualified(members)) == 4


# --------------------------------------------------------------------------- bad input: 400, nothing changed


def test_invalid_rows_refuse_the_whole_snapshot_naming_each_line(client, members, private_key):
    before = snapshot_of(members)
    body = (snapshot_csv([("ok", TS + 10), ("other", TS + 10)])
            .replace(b"crm-vip,1700000010,other", b"crm-other,1700000010,other")
            + b"passthrough,disqualify,crm-vip,1700000010,gone\n"
            + b"passthrough,qualify,crm-vip,1700000010000,millis\n"
            + b"passthrough,qualify,crm-vip\n"
            + b"passthrough,qualify,crm-vip,soon,later\n")
    response = post(client, private_key, gz(body))
    assert response.status_code == 400
    d = detail(response)
    assert (d["code"], d["sqlstate"]) == ("invalid_rows", "PT020")
    assert d["message"].startswith("snapshot refused: 5 of 6 rows invalid; row 3: data.audience_id")
    assert [item["row"] for item in d["invalids"]] == [3, 4, 5, 6, 7]  # lines of the CSV, the header is line 1
    messages = [item["message"] for item in d["invalids"]]
    assert messages[0] == 'data.audience_id: this is a snapshot of "crm-vip", got "crm-other"'
    assert messages[1].startswith("action: a snapshot lists the qualified members")
    assert "looks like milliseconds" in messages[2]
    assert "csv: expected 5 fields, got 3" in d["invalids"][3]["problems"]
    assert messages[4] == 'data.ts: must be a number of seconds since the Unix epoch, got "soon"'
    assert unchanged(members, before)


def test_rows_that_all_name_another_audience_are_one_400(client, members, private_key):
    before = snapshot_of(members)
    response = post(client, private_key, gz(snapshot_csv([(f"u{i}", TS) for i in range(120)], audience="crm-x")))
    assert response.status_code == 400
    d = detail(response)
    assert (d["code"], d["sqlstate"], d["message"]) == (
        "snapshot_of_another_audience", "PT024", 'snapshot of "crm-vip" refused: its rows are of audience "crm-x"')
    assert "invalids" not in d and "passthrough import --audience crm-x" in d["hint"]
    assert unchanged(members, before)


def test_a_row_for_an_unknown_identifier_type_is_invalid(client, enabled, private_key):
    body = b"type,action,audience_id,ts,cookie_id\npassthrough,qualify,crm-vip,,c1\n"
    response = post(client, private_key, body, content_type="text/csv", params={"force": "true"})
    assert response.status_code == 400 and detail(response)["code"] == "invalid_rows"
    assert detail(response)["invalids"][0]["row"] == 2
    assert "cookie_id" in detail(response)["invalids"][0]["message"]
    assert stored_counts(enabled) == (0, 0, 0)


@pytest.mark.parametrize(
    "header, missing",
    [
        (b"type,action,audience_id,fs_user_id", "missing ts"),
        (b"type,action,audience_id,ts", "found 0: none"),
        (b"type,action,audience_id,ts,fs_user_id,email", "found 2: fs_user_id, email"),
        (b"\n", "missing type, action, audience_id, ts"),
    ],
    ids=["no ts", "no identifier column", "two identifier columns", "blank first line"],
)
def test_a_wrong_header_is_400_naming_what_is_wrong(client, members, private_key, header, missing):
    before = snapshot_of(members)
    body = header + b"\npassthrough,qualify,crm-vip,1700000000,m0\n"
    response = post(client, private_key, gz(body))
    assert response.status_code == 400
    d = detail(response)
    assert (d["code"], d["field"]) == ("invalid_csv_header", "header")
    assert "the CSV header must" in d["message"] and missing in d["message"]
    assert unchanged(members, before)


@pytest.mark.parametrize(
    "content_type, content_encoding, body, code, words",
    [
        ("application/gzip", None, CSV, "malformed_gzip", "not gzip"),
        ("text/csv", "gzip", CSV, "malformed_gzip", "not valid gzip"),
        ("application/gzip", None, gz(CSV)[:-6], "malformed_gzip", "ended before"),
        ("application/gzip", None, gz(CSV) + b"junk", "malformed_gzip", "not valid gzip"),
        ("text/csv", None, CSV + b"passthrough,qualify,crm-vip,,\xff\xfe\n", "malformed_csv",
         "not UTF-8 text: line 5 holds the bytes ff"),
        ("text/csv", None, CSV + b'passthrough,qualify,crm-vip,,"' + (b"x" * 999 + b"\n") * 200 + b'"\n',
         "malformed_csv", "field larger than field limit"),  # a quoted field of 200 short lines
        ("text/csv", None, b"", "empty_body", "empty"),
        ("application/gzip", None, gz(b""), "empty_body", "empty"),
        ("application/json", None, CSV, "unsupported_media_type", "Content-Type must be text/csv"),
        (None, None, CSV, "unsupported_media_type", "none was given"),
        ("application/x-www-form-urlencoded", None, CSV, "unsupported_media_type", "application/gzip"),
        ("text/csv", "br", CSV, "unsupported_content_encoding", "gzip or absent"),
    ],
    ids=["gzip type, plain body", "gzip encoding, plain body", "truncated gzip", "data after the gzip stream",
         "not utf-8", "csv error", "empty body", "empty gzip", "json type", "no type", "form type", "brotli"],
)
def test_a_body_that_is_not_a_csv_snapshot_is_400(
    client, members, private_key, content_type, content_encoding, body, code, words
):
    before = snapshot_of(members)
    request_headers = {"x-api-key": private_key}
    if content_type:
        request_headers["content-type"] = content_type
    if content_encoding:
        request_headers["content-encoding"] = content_encoding
    response = client.post(URL, params={"force": "true"}, headers=request_headers, content=body)
    assert response.status_code == 400, response.text
    assert detail(response)["code"] == code and words in detail(response)["message"], detail(response)
    assert unchanged(members, before)


def big_csv(rows: int) -> bytes:
    return snapshot_csv([(f"u{i:06d}", TS + 10) for i in range(rows)])


@pytest.mark.parametrize(
    "content_type, body, code",
    [
        ("application/gzip", gz(big_csv(60_000))[:-100], "malformed_gzip"),
        ("text/csv", big_csv(60_000) + b"passthrough,qualify,crm-vip,,\xff\n", "malformed_csv"),
    ],
    ids=["truncated gzip", "not utf-8"],
)
def test_a_body_broken_after_the_first_megabytes_aborts_the_copy_and_changes_nothing(
    client, members, private_key, content_type, body, code
):
    before = snapshot_of(members)
    response = post(client, private_key, body, content_type=content_type, params={"force": "true"})
    assert response.status_code == 400 and detail(response)["code"] == code, response.text
    assert unchanged(members, before)


@pytest.mark.parametrize(
    "params, field, words",
    [
        ({"dryrun": "true"}, "dryrun", "unknown query parameter 'dryrun'"),
        ({"dry_run": "yes"}, "dry_run", "must be true or false"),
        ({"force": ""}, "force", "must be true or false"),
        ({"at": "yesterday"}, "at", "must be a number of seconds since the Unix epoch"),
        ({"at": "NaN"}, "at", "must be a number"),
        ({"at": "1e999999999"}, "at", "must be a number"),  # numeric would overflow (22003, once a 500)
        ({"max_disqualify_share": "1e999999999"}, "max_disqualify_share", "must be a number"),
        ({"max_disqualify_share": "1e-999999999"}, "max_disqualify_share", "must be a number"),
        ({"max_disqualify_share": "half"}, "max_disqualify_share", "must be a number"),
        ({"diff_limit": "ten"}, "diff_limit", "must be an integer"),
        ({"diff_limit": "10"}, "diff_limit", "only a dry run lists a diff; add dry_run=true"),  # was ignored
        ({"diff_limit": "-1", "dry_run": "false"}, "diff_limit", "only a dry run lists a diff"),
    ],
)
def test_an_unknown_or_malformed_query_parameter_is_400_before_the_body_is_read(
    client, members, private_key, params, field, words
):
    before = snapshot_of(members)
    response = post(client, private_key, b"not even gzip", params=params)
    assert response.status_code == 400
    assert (detail(response)["code"], detail(response)["field"]) == ("invalid_argument", field)
    assert words in detail(response)["message"]
    assert unchanged(members, before)


def test_a_repeated_query_parameter_is_400(client, members, private_key):
    response = client.post(f"{URL}?dry_run=true&dry_run=false", headers=headers(private_key), content=gz(CSV))
    assert response.status_code == 400 and detail(response)["field"] == "dry_run"


@pytest.mark.parametrize(
    "params, field",
    [({"max_disqualify_share": "1.5"}, "max_disqualify_share"), ({"max_disqualify_share": "-0.1"},
                                                                  "max_disqualify_share"),
     # the range is SQL's (passthrough.snapshot_diff), the same as passthrough import --diff-limit's
     ({"dry_run": "true", "diff_limit": "100001"}, "diff_limit"), ({"dry_run": "true", "diff_limit": "-1"},
                                                                   "diff_limit")],
)
def test_parameters_out_of_range_are_refused_by_the_database(client, members, private_key, params, field):
    before = snapshot_of(members)
    response = post(client, private_key, gz(CSV), params=params)
    assert response.status_code == 400
    d = detail(response)
    assert (d["code"], d["sqlstate"], d["field"]) == ("invalid_argument", "PT010", field)
    assert unchanged(members, before)


def test_values_no_column_can_hold_are_400_naming_their_rows(client, members, private_key):
    """A ts numeric cannot hold, or a NUL, would fail the COPY with no row named (22003, 22021): each is its row's
    problem, as any other invalid value is."""
    before = snapshot_of(members)
    body = (f"type,action,audience_id,ts,fs_user_id\npassthrough,qualify,{AUD},1e999999999,m1\n"
            f"passthrough,qualify,{AUD},1700000000,m\x002\n").encode()
    response = post(client, private_key, gz(body))
    assert response.status_code == 400
    d = detail(response)
    assert (d["code"], d["sqlstate"]) == ("invalid_rows", "PT020"), d
    assert [(item["row"], item["message"]) for item in d["invalids"]] == [
        (2, "data.ts: must be seconds since the Unix epoch, got 1e999999999, more digits than PostgreSQL's numeric "
            "holds"),
        (3, 'identifiers.fs_user_id: must not contain "\\u0000" (NUL), which PostgreSQL text cannot hold, '
            'got "m\\u00002"'),
    ]
    assert unchanged(members, before)


@pytest.mark.parametrize("at", ["5", "1700000000000", str(TS * 10)], ids=["1970", "milliseconds", "2508"])
def test_an_impossible_snapshot_time_is_400(client, members, private_key, at):
    before = snapshot_of(members)
    response = post(client, private_key, gz(CSV), params={"at": at})
    assert response.status_code == 400
    assert (detail(response)["code"], detail(response)["sqlstate"]) == ("invalid_argument", "PT010")
    assert "invalid snapshot time" in detail(response)["message"]
    assert unchanged(members, before)


def test_an_audience_id_longer_than_255_characters_is_400(client, enabled, private_key):
    long_id = "a" * 256
    body = snapshot_csv([("m0", TS)], audience=long_id)
    response = post(client, private_key, body, content_type="text/csv", url=f"/v3/audiences/{long_id}/snapshot")
    assert response.status_code == 400
    assert (detail(response)["code"], detail(response)["field"]) == ("invalid_argument", "audience_id")
    assert stored_counts(enabled) == (0, 0, 0)


# --------------------------------------------------------------------------- size limits


SMALL = ApiConfig(max_body_bytes=100, max_snapshot_bytes=2000, pool_max_size=2, pool_timeout=2.0)


@pytest.mark.parametrize("api_config", [SMALL])
def test_a_body_over_the_snapshot_limit_is_413_and_changes_nothing(client, members, private_key, api_config):
    before = snapshot_of(members)
    rows = snapshot_csv([(f"m{i}", TS + 10) for i in range(4)])
    header, _, rest = rows.partition(b"\n")
    too_big = header.ljust(2001 - len(rest) - 1) + b"\n" + rest  # header names are stripped: spaces pad it
    response = post(client, private_key, too_big, content_type="text/csv")
    assert response.status_code == 413
    assert detail(response)["code"] == "body_too_large"
    assert "at most 2000 bytes" in detail(response)["message"]

    def chunks():  # no Content-Length: counted as it arrives
        for start in range(0, len(too_big), 500):
            yield too_big[start:start + 500]

    response = post(client, private_key, chunks(), content_type="text/csv")
    assert response.status_code == 413 and detail(response)["code"] == "body_too_large"
    assert unchanged(members, before)
    # the limit is max_snapshot_bytes, not the events' max_body_bytes (100): exactly 2000 bytes is accepted
    response = post(client, private_key, too_big[:2000], content_type="text/csv")
    assert response.status_code == 200, response.text
    assert response.json()["unchanged"] == 4


@pytest.mark.parametrize("api_config", [SMALL])
@pytest.mark.parametrize("content_encoding", [None, "gzip"])
def test_a_gzip_bomb_is_refused_by_the_decompressed_size_limit(
    client, members, private_key, api_config, content_encoding
):
    before = snapshot_of(members)
    bomb = gz(snapshot_csv([("m0", TS + 10)]) + b"\n" * 1_000_000)  # valid CSV (blank lines are skipped), 1 MB
    assert len(bomb) < 2000
    extra = {"content-encoding": content_encoding} if content_encoding else {}
    response = post(client, private_key, bomb, content_type="text/csv" if content_encoding else "application/gzip",
                    **extra)
    assert response.status_code == 413
    assert "decompressed" in detail(response)["message"]
    assert unchanged(members, before)


@pytest.mark.parametrize("content_type", ["text/csv", "application/gzip"])
def test_a_line_longer_than_65536_characters_is_413_naming_the_line(client, members, private_key, content_type):
    before = snapshot_of(members)
    longest = b"x" * 65535 + b"\n"  # 65,536 characters with its newline: an invalid row, reported as one
    response = post(client, private_key, CSV + longest, content_type="text/csv")
    assert response.status_code == 400 and detail(response)["code"] == "invalid_rows", response.text
    assert [i["row"] for i in detail(response)["invalids"]] == [5]
    for body in (CSV + b"x" + longest, CSV + b"x" * 10_000_000):  # one more character; a 10 MB line, no newline
        response = post(client, private_key, gz(body) if content_type == "application/gzip" else body,
                        content_type=content_type)
        assert response.status_code == 413, response.text
        assert detail(response)["code"] == "line_too_long"
        assert detail(response)["message"].startswith("line 5 of the snapshot is longer than 65536 characters")
    assert unchanged(members, before)


@pytest.mark.parametrize("api_config", [SMALL])
def test_blank_lines_count_toward_the_lines_a_snapshot_may_have(client, members, private_key, api_config):
    """max_snapshot_bytes 2000: no row is shorter than 15 bytes, so a snapshot has at most 2000 // 15 = 133
    lines. Blank lines were skipped for free: 250 MB of them cost 18.5 s of CPU under the 256 MiB limit."""
    before = snapshot_of(members)
    rows = snapshot_csv([(f"m{i}", TS + 10) for i in range(4)])  # 5 lines
    response = post(client, private_key, rows + b"\n" * 129, content_type="text/csv")  # 134 lines, 323 bytes
    assert response.status_code == 413, response.text
    assert detail(response)["code"] == "too_many_lines"
    assert "more than 133 lines, blank lines included" in detail(response)["message"]
    assert unchanged(members, before)
    response = post(client, private_key, rows + b"\n" * 128, content_type="text/csv")  # 133 lines
    assert response.status_code == 200, response.text
    assert response.json()["unchanged"] == 4


# --------------------------------------------------------------------------- failures: never a 2xx, nothing partial


def test_a_full_disk_while_spooling_is_507_and_stores_nothing(client, members, private_key, monkeypatch):
    """The spool file on a full disk: /dev/full fails every write with ENOSPC, as a full TMPDIR does."""
    from pyapp.web import snapshots

    monkeypatch.setattr(snapshots.tempfile, "TemporaryFile", lambda **_: open("/dev/full", "w+b"))  # noqa: SIM115
    before = snapshot_of(members)
    response = post(client, private_key, gz(CSV))
    assert response.status_code == 507, response.text
    assert detail(response)["code"] == "insufficient_storage" and "nothing was stored" in detail(response)["message"]
    assert unchanged(members, before)


@pytest.fixture
def commit_refused(members):
    """A deferred trigger that fails every transaction that writes a batch, at COMMIT."""
    members.execute(
        "CREATE FUNCTION public.refuse_commit() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'refused at commit'; END $$;"
        " CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT ON passthrough.batches"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.refuse_commit()"
    )
    yield members
    members.execute("DROP TRIGGER refuse_commit ON passthrough.batches; DROP FUNCTION public.refuse_commit()")


def test_a_failure_at_commit_is_retried_then_503_and_changes_nothing(client, commit_refused, private_key):
    before = snapshot_of(commit_refused)
    response = post(client, private_key, gz(snapshot_csv([("m0", TS + 10), ("x", TS + 10)])),
                    params={"force": "true"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert detail(response)["code"] == "database_unavailable"
    assert unchanged(commit_refused, before)


def test_events_still_go_through_the_events_endpoint(client, enabled, private_key):
    """The snapshot endpoint takes CSV only; events keep their own endpoint and content type."""
    response = client.post(URL, headers=json_headers(private_key), json=[event(data_audience_id=AUD)])
    assert response.status_code == 400 and detail(response)["code"] == "unsupported_media_type"
    assert stored_counts(enabled) == (0, 0, 0)
