"""GraphQL over time: Customer.audiences(at:) and Query.size_history, against the SQL they call."""

from __future__ import annotations

from typing import Any

import pytest
from http_helpers import json_headers

pytest_plugins = ["http_fixtures"]

TS = 1_700_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture
def history(enabled):
    enabled.execute("SELECT passthrough.create_audience('seg_a', 'aud-a', 'A')")
    enabled.execute("SELECT passthrough.create_audience('seg_b', 'aud-b')")
    for identifier, audience, action, ts in [("u1", "aud-a", "qualify", TS), ("u1", "aud-a", "disqualify", TS + 7200),
                                             ("u1", "aud-b", "qualify", TS + 3600), ("u2", "aud-a", "qualify", TS + 0.5)]:
        enabled.execute("SELECT passthrough.apply_event('fs_user_id', %s, %s, %s, %s::numeric)",
                         (identifier, audience, action, str(ts)))
    return enabled


def gql(client, key, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post("/v3/graphql", headers=json_headers(key), json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    return response.json()


AT_QUERY = """query($id: String, $at: Float, $subset: [String]) {
  customer(fs_user_id: $id) { audiences(subset: $subset, at: $at) { edges { node { name state size } } } } }"""


def names_and_sizes(body):
    return [(e["node"]["name"], e["node"]["size"]) for e in body["data"]["customer"]["audiences"]["edges"]]


@pytest.mark.parametrize("at, expected", [
    (TS - 1, []),
    (TS, [("seg_a", 1)]),                        # ts <= at counts; u2 joins half a second later
    (TS + 0.5, [("seg_a", 2)]),
    (TS + 3600, [("seg_a", 2), ("seg_b", 1)]),
    (TS + 7199.999999, [("seg_a", 2), ("seg_b", 1)]),
    (TS + 7200, [("seg_b", 1)]),
])
def test_customer_audiences_at(client, history, public_key, at, expected):
    assert names_and_sizes(gql(client, public_key, AT_QUERY, {"id": "u1", "at": at})) == expected


def test_at_agrees_with_sql_and_without_at_is_the_live_state(client, history, public_key):
    live = gql(client, public_key, AT_QUERY, {"id": "u1"})
    assert names_and_sizes(live) == [("seg_b", 1)]
    sql = history.execute("SELECT name, size FROM passthrough.customer_audiences_at('fs_user_id', 'u1', '{seg_a}',"
                          " to_timestamp(%s))", (TS + 60,)).fetchall()
    body = gql(client, public_key, AT_QUERY, {"id": "u1", "at": TS + 60, "subset": ["seg_a"]})
    assert names_and_sizes(body) == sql == [("seg_a", 2)]


def test_at_without_size_selected_reads_no_sizes(client, history, public_key):
    body = gql(client, public_key, f'{{customer(fs_user_id: "u1") {{audiences(at: {TS}) {{edges {{node {{name state}}}}}}}}}}')
    assert body["data"]["customer"]["audiences"]["edges"] == [{"node": {"name": "seg_a", "state": "qualified"}}]
    fragment = gql(client, public_key, 'query { customer(fs_user_id: "u1") { audiences(at: %s) { ...A } } }'
                   ' fragment A on AudienceConnection { edges { node { name size } } }' % TS)
    assert names_and_sizes(fragment) == [("seg_a", 1)]  # size asked for through a fragment


def test_an_at_out_of_range_is_an_invalid_argument(client, history, public_key):
    body = gql(client, public_key, AT_QUERY, {"id": "u1", "at": 1e300})
    assert body["data"] == {"customer": None}
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"


SIZE_QUERY = """query($a: String!, $from: Float!, $to: Float!, $bucket: String) {
  size_history(audience: $a, from: $from, to: $to, bucket: $bucket) {
    start end size_at_start entered exited size_at_end } }"""


def test_size_history(client, history, public_key):
    body = gql(client, public_key, SIZE_QUERY, {"a": "seg_a", "from": TS - 3600, "to": TS + 3 * 3600})
    assert body["data"]["size_history"] == [
        {"start": 1699995600.0, "end": 1699999200.0, "size_at_start": 0, "entered": 0, "exited": 0, "size_at_end": 0},
        {"start": 1699999200.0, "end": 1700002800.0, "size_at_start": 0, "entered": 2, "exited": 0, "size_at_end": 2},
        {"start": 1700002800.0, "end": 1700006400.0, "size_at_start": 2, "entered": 0, "exited": 0, "size_at_end": 2},
        {"start": 1700006400.0, "end": 1700010000.0, "size_at_start": 2, "entered": 0, "exited": 1, "size_at_end": 1},
        {"start": 1700010000.0, "end": 1700013600.0, "size_at_start": 1, "entered": 0, "exited": 0, "size_at_end": 1},
    ]
    day = gql(client, public_key, SIZE_QUERY, {"a": "seg_a", "from": TS, "to": TS + 1, "bucket": "day"})
    assert day["data"]["size_history"] == [
        {"start": 1699920000.0, "end": 1700006400.0, "size_at_start": 0, "entered": 2, "exited": 0, "size_at_end": 2}]


@pytest.mark.parametrize("variables, code", [
    ({"a": "nope", "from": TS, "to": TS + 1}, "NOT_FOUND"),
    ({"a": "seg_a", "from": TS, "to": TS - 1}, "INVALID_ARGUMENT"),
    ({"a": "seg_a", "from": TS, "to": TS + 1, "bucket": "week"}, "INVALID_ARGUMENT"),
    # not even a unit date_trunc knows (was PostgreSQL's 22023, an internal error)
    ({"a": "seg_a", "from": TS, "to": TS + 1, "bucket": "x"}, "INVALID_ARGUMENT"),
    ({"a": "seg_a", "from": TS, "to": TS + 1, "bucket": ""}, "INVALID_ARGUMENT"),
    ({"a": "seg_a", "from": TS, "to": TS + 3600 * 2000}, "INVALID_ARGUMENT"),
])
def test_size_history_errors(client, history, public_key, variables, code):
    body = gql(client, public_key, SIZE_QUERY, variables)
    assert body["data"] is None and body["errors"][0]["extensions"]["code"] == code
