"""`passthrough serve` on the Citus coordinator: events in over HTTP, GraphQL and the segments API read them."""

from __future__ import annotations

import uuid

import httpx
import psycopg
from live_server import serving


def test_events_over_http_then_graphql_and_segments_read_them(citus_url, tmp_path):
    prefix = f"h{uuid.uuid4().hex[:8]}"
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute("SELECT passthrough.enable()")
        key = conn.execute("SELECT passthrough.create_api_key(%s, 'private')", (prefix,)).fetchone()[0]
        start = conn.execute("SELECT passthrough.current_change_cursor()").fetchone()[0]
        for audience in ("in", "out"):
            conn.execute("SELECT passthrough.create_audience(%s, %s)", (f"{prefix}_{audience}", f"{prefix}-{audience}"))
    events = [{"type": "passthrough", "action": action, "identifiers": {"fs_user_id": f"{prefix}-u{i}"},
               "data": {"audience_id": f"{prefix}-{audience}", "ts": 1_760_000_000 + i}}
              for i in range(40) for audience, action in (("in", "qualify"), ("out", "disqualify"))]
    with serving(citus_url, tmp_path) as base, httpx.Client(base_url=base, headers={"x-api-key": key},
                                                              timeout=30) as http:
        sent = http.post("/v3/events", json=events)
        assert sent.status_code in (200, 202), sent.text

        query = ('query { customer(fs_user_id: "%s-u7") { audiences(subset: ["%s_in", "%s_out"]) '
                 '{ edges { node { name state } } } } }') % (prefix, prefix, prefix)
        answer = http.post("/v3/graphql", json={"query": query})
        assert answer.status_code == 200, answer.text
        assert "errors" not in answer.json(), answer.text
        nodes = [e["node"] for e in answer.json()["data"]["customer"]["audiences"]["edges"]]
        assert nodes == [{"name": f"{prefix}_in", "state": "qualified"}]  # the qualified ones, as on one node

        segment = http.get(f"/v3/segments/{prefix}_in")
        assert segment.status_code == 200, segment.text
        assert (segment.json()["segment_id"], segment.json()["size"]) == (f"{prefix}_in", 40)

        changes = http.get("/v3/changes", params={"after": start, "limit": 1000})
        assert changes.status_code == 200, changes.text
        mine = [(c["change"], c["identifier"]) for c in changes.json()["changes"]
                if c["audience_id"].startswith(prefix)]
        assert sorted(mine) == sorted(("entered", f"{prefix}-u{i}") for i in range(40))
