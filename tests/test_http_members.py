"""GET /v3/segments/{segment_id}/members (pyapp/web/members.py): the export over HTTP, NDJSON or CSV, paged."""

from __future__ import annotations

import csv
import io

import orjson
import pytest
from sqlhelpers import reset_data  # noqa: F401  (the db fixture empties the database)

pytest_plugins = ["http_fixtures"]

TS = 1_700_000_000
URL = "/v3/segments/vip/members"


@pytest.fixture
def vip(enabled):
    enabled.execute("SELECT passthrough.create_audience('vip', 'crm-vip')")
    for identifier_type, identifier, ts in [("fs_user_id", "u2", TS + 0.5), ("email", "a,b@x", TS),
                                            ("fs_user_id", "u1", TS + 1), ("fs_user_id", "u3", TS)]:
        enabled.execute("SELECT passthrough.apply_event(%s, %s, 'crm-vip', 'qualify', %s::numeric)",
                        (identifier_type, identifier, ts))
    enabled.execute("SELECT passthrough.apply_event('fs_user_id', 'u3', 'crm-vip', 'disqualify', %s::numeric)", (TS + 2,))
    return enabled


def ndjson(response) -> list[dict]:
    return [orjson.loads(line) for line in response.content.splitlines()]


def test_ndjson_by_default(client, vip, private_key):
    response = client.get(URL, headers={"x-api-key": private_key})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert ndjson(response) == [  # fs_user_id was added before email
        {"identifier_type": "fs_user_id", "identifier": "u1", "ts": TS + 1},
        {"identifier_type": "fs_user_id", "identifier": "u2", "ts": TS + 0.5},
        {"identifier_type": "email", "identifier": "a,b@x", "ts": TS},
    ]
    assert "link" not in response.headers and "x-next-cursor" not in response.headers


def test_csv_when_accepted(client, vip, private_key):
    response = client.get(URL, headers={"x-api-key": private_key, "accept": "text/csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(response.text))) == [
        ["identifier_type", "identifier", "ts"], ["fs_user_id", "u1", "1700000001"],
        ["fs_user_id", "u2", "1700000000.5"], ["email", "a,b@x", "1700000000"]]


def test_pages_are_linked_and_cover_every_member_once(client, vip, private_key):
    seen, url, pages = [], f"{URL}?limit=2", 0
    while url:
        response = client.get(url, headers={"x-api-key": private_key})
        assert response.status_code == 200
        seen += [row["identifier"] for row in ndjson(response)]
        pages += 1
        link = response.headers.get("link")
        url = link[1:link.index(">")] if link else None
        if link:
            assert response.headers["x-next-cursor"] in url.replace("%3A", ":")
    assert (seen, pages) == (["u1", "u2", "a,b@x"], 2)


def test_at_a_past_instant(client, vip, private_key):
    response = client.get(f"{URL}?at={TS + 0.75}", headers={"x-api-key": private_key})
    assert [(r["identifier"], r["ts"]) for r in ndjson(response)] == [("u2", TS + 0.5), ("u3", TS), ("a,b@x", TS)]


def test_an_empty_segment_is_an_empty_body_or_a_header(client, enabled, private_key):
    enabled.execute("SELECT passthrough.create_audience('vip', 'crm-vip')")
    assert client.get(URL, headers={"x-api-key": private_key}).content == b""
    assert client.get(URL, headers={"x-api-key": private_key, "accept": "text/csv"}).text == "identifier_type,identifier,ts\n"


@pytest.mark.parametrize("query, status, field", [
    ("?limit=0", 400, "limit"), ("?limit=100001", 400, "limit"), ("?limit=x", 400, "limit"),
    ("?at=soon", 400, "at"), ("?at=1e999999999", 400, "at"), ("?after=nocolon", 400, "after"),
    ("?cursor=x", 400, "cursor"),
])
def test_invalid_parameters_are_400_naming_the_field(client, vip, private_key, query, status, field):
    response = client.get(URL + query, headers={"x-api-key": private_key})
    assert response.status_code == status
    assert response.json()["detail"]["field"] == field


def test_an_unknown_segment_is_404_and_an_unacceptable_type_406(client, vip, private_key):
    assert client.get("/v3/segments/nope/members", headers={"x-api-key": private_key}).status_code == 404
    response = client.get(URL, headers={"x-api-key": private_key, "accept": "application/xml"})
    assert response.status_code == 406 and response.json()["detail"]["code"] == "not_acceptable"


def test_a_public_key_may_not_export(client, vip, public_key):
    assert client.get(URL, headers={"x-api-key": public_key}).status_code == 403


def test_a_page_ending_a_block_of_the_database_output_still_names_the_next(client, enabled, private_key):
    """The database sends a page in blocks of 10,000 lines (pyapp/ingest/export.py): a page of 10,000 ends one block and
    the member after it, which tells that another page follows, is in the next block."""
    enabled.execute("SELECT passthrough.create_audience('vip', 'crm-vip')")
    enabled.execute("SELECT passthrough.apply_events(%s::jsonb)", (orjson.dumps([
        {"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": f"u{n:05d}"},
         "data": {"audience_id": "crm-vip", "ts": TS}} for n in range(10_001)]).decode(),))
    first = client.get(f"{URL}?limit=10000", headers={"x-api-key": private_key})
    assert len(ndjson(first)) == 10_000 and first.headers["x-next-cursor"] == "fs_user_id:u09999"
    link = first.headers["link"]
    second = client.get(link[1:link.index(">")], headers={"x-api-key": private_key})
    assert [row["identifier"] for row in ndjson(second)] == ["u10000"] and "link" not in second.headers
