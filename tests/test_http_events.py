"""POST /v3/events over HTTP: 202 after commit, all-or-nothing batches, transport errors, 503s."""

from __future__ import annotations

import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from http_helpers import TIMESTAMP, gzipped, json_headers
from sqlhelpers import event, stored_counts

from pyapp.db import connect
from pyapp.web import ApiConfig

pytest_plugins = ["http_fixtures"]


def qualified(conn, identifier="user-1", audience="aud-1"):
    """The stored state of (fs_user_id identifier, audience), or None."""
    row = conn.execute(
        "SELECT m.qualified FROM passthrough.memberships m"
        " JOIN passthrough.external_audiences e ON e.id = m.audience_key"
        " JOIN passthrough.identifier_types t ON t.id = m.identifier_type_id"
        " WHERE t.name = 'fs_user_id' AND m.identifier = %s AND e.external_id = %s",
        (identifier, audience),
    ).fetchone()
    return None if row is None else row[0]


# --------------------------------------------------------------------------- success


def test_a_batch_is_committed_before_the_202(client, enabled, private_key, http_database_url):
    response = client.post(
        "/v3/events",
        headers=json_headers(private_key),
        json=[event(), event(identifiers={"fs_user_id": "user-2"}, action="disqualify")],
    )
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"title", "status", "timestamp", "accepted", "ignored", "changed"}
    assert (body["title"], body["status"]) == ("Accepted", 202)
    assert TIMESTAMP.match(body["timestamp"])
    assert (body["accepted"], body["ignored"], body["changed"]) == (2, 0, 1)
    # another connection sees the batch the moment the answer arrives: it was committed first
    with connect(http_database_url) as other:
        assert qualified(other, "user-1") is True and qualified(other, "user-2") is False
        assert other.execute("SELECT source, event_count FROM passthrough.batches").fetchall() == [("http", 2)]


def test_qualify_then_disqualify_by_event_time(client, enabled, private_key):
    headers = json_headers(private_key)
    assert client.post("/v3/events", headers=headers, json=[event(data_ts=100 + 1_700_000_000)]).status_code == 202
    assert qualified(enabled) is True
    late = event(action="disqualify", data_ts=1_700_000_050)  # older than the qualify: loses
    assert client.post("/v3/events", headers=headers, json=[late]).json()["changed"] == 0
    assert qualified(enabled) is True
    newer = event(action="disqualify", data_ts=1_700_000_200)
    assert client.post("/v3/events", headers=headers, json=[newer]).json()["changed"] == 1
    assert qualified(enabled) is False


def test_a_single_event_object_is_a_batch_of_one(client, enabled, private_key):
    response = client.post("/v3/events", headers=json_headers(private_key), json=event())
    assert response.status_code == 202 and response.json()["accepted"] == 1
    assert qualified(enabled) is True


def test_an_empty_array_is_accepted_and_stores_nothing(client, enabled, private_key):
    response = client.post("/v3/events", headers=json_headers(private_key), json=[])
    assert response.status_code == 202 and response.json()["accepted"] == 0
    assert stored_counts(enabled) == (0, 0, 0)


def test_events_as_the_optimizely_sdks_send_them(client, enabled, private_key):
    sdk_event = {
        "type": "passthrough",
        "action": "qualify",
        "identifiers": {"fs-user-id": "user-1"},
        "data": {
            "audience_id": "aud-1",
            "ts": 1_700_000_000,
            "idempotence_id": "5d1f6d4e-5d5e-4c4e-9c1c-0d6d6f1d2c3b",
            "data_source_type": "sdk",
            "data_source": "python-sdk",
            "data_source_version": "5.7.0",
        },
    }
    response = client.post("/v3/events", headers=json_headers(private_key), json=[sdk_event])
    assert response.status_code == 202
    assert qualified(enabled) is True
    assert enabled.execute("SELECT idempotence_id FROM passthrough.events").fetchall() == [
        ("5d1f6d4e-5d5e-4c4e-9c1c-0d6d6f1d2c3b",)
    ]


def test_other_event_types_are_acknowledged_counted_and_not_stored(client, enabled, private_key):
    identified = {"type": "fullstack", "action": "identified", "identifiers": {"fs_user_id": "user-1"}, "data": {}}
    response = client.post("/v3/events", headers=json_headers(private_key), json=[identified, event()])
    assert response.status_code == 202
    assert (response.json()["accepted"], response.json()["ignored"]) == (1, 1)
    assert stored_counts(enabled) == (1, 1, 1)


def test_a_public_key_sends_other_event_types_but_no_passthrough_event_by_default(client, enabled, public_key):
    """Public keys ship inside web pages: with one, anyone could rewrite anyone's membership."""
    identified = {"type": "fullstack", "action": "identified", "identifiers": {"fs_user_id": "user-1"}, "data": {}}
    ok = client.post("/v3/events", headers=json_headers(public_key), json=[identified])
    assert ok.status_code == 202 and (ok.json()["accepted"], ok.json()["ignored"]) == (0, 1)
    refused = client.post("/v3/events", headers=json_headers(public_key), json=[identified, event()])
    assert refused.status_code == 403
    detail = refused.json()["detail"]
    assert (detail["code"], detail["sqlstate"]) == ("public_key_passthrough_events", "PT036")
    assert "public_passthrough_events on" in detail["hint"]
    assert stored_counts(enabled) == (0, 0, 0)
    # an operator who accepts the risk turns it on
    enabled.execute("SELECT passthrough.set_setting('public_passthrough_events', 'on')")
    allowed = client.post("/v3/events", headers=json_headers(public_key), json=[identified, event()])
    assert allowed.status_code == 202 and (allowed.json()["accepted"], allowed.json()["ignored"]) == (1, 1)
    enabled.execute("SELECT passthrough.set_setting('public_passthrough_events', 'off')")
    assert client.post("/v3/events", headers=json_headers(public_key), json=[event()]).status_code == 403


def test_other_event_types_are_acknowledged_even_while_disabled(client, db, public_key):
    identified = {"type": "fullstack", "action": "identified", "identifiers": {"fs_user_id": "user-1"}}
    response = client.post("/v3/events", headers=json_headers(public_key), json=[identified])
    assert response.status_code == 202 and response.json()["ignored"] == 1
    assert stored_counts(db) == (0, 0, 0)


@pytest.mark.parametrize("kind", ["missing", "null"])
def test_an_event_without_a_type_is_refused_naming_the_field(client, enabled, private_key, kind):
    """ODP requires type; an event without one is invalid (it was once neither stored nor counted)."""
    untyped = event(identifiers={"fs_user_id": "user-2"})
    if kind == "missing":
        del untyped["type"]
    else:
        untyped["type"] = None
    response = client.post("/v3/events", headers=json_headers(private_key), json=[event(), untyped])
    assert response.status_code == 400
    [invalid] = response.json()["detail"]["invalids"]
    assert invalid["event"] == 1 and invalid["problems"] == ["type: is required"]
    assert stored_counts(enabled) == (0, 0, 0)  # the whole batch refused


def test_a_ts_no_number_can_hold_is_400_not_500(client, enabled, private_key):
    body = b'[{"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": "u"},' \
           b' "data": {"audience_id": "a", "ts": 1e999999999}}]'
    response = client.post("/v3/events", headers=json_headers(private_key), content=body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"]["code"] == "malformed_json"  # the parser refuses it: a float would be infinite
    assert stored_counts(enabled) == (0, 0, 0)


def test_a_gzip_body_is_accepted(client, enabled, private_key):
    response = client.post(
        "/v3/events",
        headers=json_headers(private_key, **{"content-encoding": "gzip"}),
        content=gzipped([event(), event(identifiers={"fs_user_id": "user-2"})]),
    )
    assert response.status_code == 202 and response.json()["accepted"] == 2
    assert qualified(enabled, "user-2") is True


def test_content_type_parameters_are_allowed(client, enabled, private_key):
    headers = json_headers(private_key, **{"content-type": "Application/JSON; charset=utf-8"})
    assert client.post("/v3/events", headers=headers, content=orjson.dumps([event()])).status_code == 202


def test_exactly_the_maximum_number_of_events_is_accepted(client, enabled, private_key):
    batch = [event(identifiers={"fs_user_id": f"user-{i}"}) for i in range(500)]
    response = client.post("/v3/events", headers=json_headers(private_key), json=batch)
    assert response.status_code == 202 and response.json()["accepted"] == 500


# --------------------------------------------------------------------------- refused batches: nothing stored


def test_a_batch_with_invalid_events_is_refused_whole_listing_each(client, enabled, private_key):
    batch = [event(), event(action="maybe"), event(), event(identifiers={}, data_ts="soon")]
    response = client.post("/v3/events", headers=json_headers(private_key), json=batch)
    assert response.status_code == 400
    body = response.json()
    assert body["title"] == "Bad Request"
    detail = body["detail"]
    assert (detail["code"], detail["sqlstate"]) == ("invalid_events", "PT001")
    assert detail["message"].startswith("batch refused: 2 of 4 events invalid")
    assert [item["event"] for item in detail["invalids"]] == [1, 3]
    assert detail["invalids"][0]["message"] == 'action: must be "qualify" or "disqualify", got "maybe"'
    assert detail["invalids"][1]["problems"] == [
        "data.ts: must be a number of seconds since the Unix epoch, got string",
        "identifiers: must hold exactly one high-confidence identifier, got 0 "
        "(low-confidence ones, such as vuid, may come with it)",
    ]
    assert stored_counts(enabled) == (0, 0, 0)


@pytest.mark.parametrize("body", [b'"hello"', b"5", b"null", b"true"])
def test_a_body_that_is_neither_an_array_nor_an_object_is_refused(client, enabled, private_key, body):
    response = client.post("/v3/events", headers=json_headers(private_key), content=body)
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "invalid_events"
    assert "must be a JSON array" in response.json()["detail"]["message"]


def test_disabled_is_403_saying_how_to_enable(client, db, private_key):
    response = client.post("/v3/events", headers=json_headers(private_key), json=[event()])
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert (detail["code"], detail["message"]) == ("passthrough_disabled", "passthrough is disabled")
    assert "passthrough enable" in detail["hint"] and "passthrough.enable()" in detail["hint"]
    assert stored_counts(db) == (0, 0, 0)


def test_text_postgresql_cannot_store_is_400_not_500(client, enabled, private_key):
    response = client.post(
        "/v3/events", headers=json_headers(private_key), content=b'[{"type": "passthrough", "x": "\\u0000"}]'
    )
    assert response.status_code == 400 and response.json()["detail"]["code"] == "invalid_input"
    assert stored_counts(enabled) == (0, 0, 0)


@pytest.mark.parametrize(
    "body, code",
    [
        (b"[{", "malformed_json"),
        (b'[{"type": "passthrough",}]', "malformed_json"),
        (b"\xff\xfe[]", "malformed_json"),
        (b"", "empty_body"),
        (b"  \n", "empty_body"),
    ],
    ids=["truncated", "trailing comma", "not utf-8", "empty", "whitespace"],
)
def test_an_unreadable_body_is_400(client, enabled, private_key, body, code):
    response = client.post("/v3/events", headers=json_headers(private_key), content=body)
    assert response.status_code == 400 and response.json()["detail"]["code"] == code
    assert stored_counts(enabled) == (0, 0, 0)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"])
def test_a_wrong_content_type_is_400(client, enabled, private_key, content_type):
    headers = {"x-api-key": private_key}
    if content_type:
        headers["content-type"] = content_type
    response = client.post("/v3/events", headers=headers, content=orjson.dumps([event()]))
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "unsupported_media_type"
    assert "application/json" in response.json()["detail"]["message"]
    assert stored_counts(enabled) == (0, 0, 0)


def test_an_unknown_content_encoding_is_400(client, enabled, private_key):
    headers = json_headers(private_key, **{"content-encoding": "br"})
    response = client.post("/v3/events", headers=headers, content=orjson.dumps([event()]))
    assert response.status_code == 400 and response.json()["detail"]["code"] == "unsupported_content_encoding"


@pytest.mark.parametrize(
    "body",
    [b"[not gzip]", gzipped([event()])[:-6], gzipped([event()]) + b"junk"],
    ids=["not gzip", "truncated", "trailing data"],
)
def test_a_broken_gzip_body_is_400(client, enabled, private_key, body):
    headers = json_headers(private_key, **{"content-encoding": "gzip"})
    response = client.post("/v3/events", headers=headers, content=body)
    assert response.status_code == 400 and response.json()["detail"]["code"] == "malformed_gzip"
    assert stored_counts(enabled) == (0, 0, 0)


def test_more_events_than_the_limit_is_413(client, enabled, private_key):
    batch = [event(identifiers={"fs_user_id": f"user-{i}"}) for i in range(501)]
    response = client.post("/v3/events", headers=json_headers(private_key), json=batch)
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert detail["code"] == "too_many_events"
    assert "at most 500 events" in detail["message"] and "501" in detail["message"]
    assert stored_counts(enabled) == (0, 0, 0)


@pytest.mark.parametrize("api_config", [ApiConfig(max_events=2, pool_max_size=2, pool_timeout=2.0)])
def test_the_event_limit_is_configurable(client, enabled, private_key, api_config):
    headers = json_headers(private_key)
    assert client.post("/v3/events", headers=headers, json=[event(), event()]).status_code == 202
    response = client.post("/v3/events", headers=headers, json=[event(), event(), event()])
    assert response.status_code == 413 and "at most 2 events" in response.json()["detail"]["message"]


SMALL_BODIES = ApiConfig(max_body_bytes=1000, pool_max_size=2, pool_timeout=2.0)


@pytest.mark.parametrize("api_config", [SMALL_BODIES])
def test_a_body_over_the_size_limit_is_413_before_parsing(client, enabled, private_key, api_config):
    not_json = b"x" * 1001  # would be a 400 if it were parsed
    response = client.post("/v3/events", headers=json_headers(private_key), content=not_json)
    assert response.status_code == 413
    assert response.json()["detail"]["code"] == "body_too_large"
    assert "at most 1000 bytes" in response.json()["detail"]["message"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b"y" * 100

    response = client.post("/v3/events", headers=json_headers(private_key), content=chunks())
    assert response.status_code == 413 and response.json()["detail"]["code"] == "body_too_large"
    exactly = orjson.dumps([event()]).ljust(1000)  # whitespace padding: still valid JSON
    assert client.post("/v3/events", headers=json_headers(private_key), content=exactly).status_code == 202


@pytest.mark.parametrize("api_config", [ApiConfig(max_body_bytes=20_000, pool_max_size=2, pool_timeout=2.0)])
def test_a_gzip_bomb_is_refused_by_the_decompressed_size_limit(client, enabled, private_key, api_config):
    inflated = b"[" + b" " * 10_000_000 + b"]"  # valid JSON, 10 MB
    bomb = zlib.compress(inflated, 9, wbits=31)
    assert len(bomb) < 20_000
    response = client.post("/v3/events", headers=json_headers(private_key, **{"content-encoding": "gzip"}), content=bomb)
    assert response.status_code == 413
    assert "decompressed" in response.json()["detail"]["message"]


# --------------------------------------------------------------------------- failures: never a 2xx, nothing partial


@pytest.fixture
def commit_refused(enabled):
    """A deferred trigger that fails every transaction that writes a batch, at COMMIT."""
    enabled.execute(
        "CREATE FUNCTION public.refuse_commit() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'refused at commit'; END $$;"
        " CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT ON passthrough.batches"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.refuse_commit()"
    )
    yield enabled
    enabled.execute("DROP TRIGGER refuse_commit ON passthrough.batches; DROP FUNCTION public.refuse_commit()")


@pytest.mark.single_node("its fixture puts a test trigger on passthrough.batches, a reference table on Citus,"
                         " and Citus refuses triggers on reference tables (docs/scale-out.md: why distribute"
                         " drops replace_seed)")
def test_a_failure_at_commit_is_503_and_stores_nothing(client, commit_refused, private_key):
    response = client.post("/v3/events", headers=json_headers(private_key), json=[event()])
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"]["code"] == "database_unavailable"
    assert stored_counts(commit_refused) == (0, 0, 0)


def wait_for(query, conn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(query).fetchone()
        if row is not None:
            return row
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for: {query}")


@pytest.mark.single_node("it finds the request's backend in pg_stat_activity waiting on a lock; on Citus the"
                         " backend waits on a worker's lock, which the coordinator's pg_stat_activity does not show")
def test_the_database_connection_dying_mid_batch_is_503_and_stores_nothing(
    client, enabled, private_key, http_database_url
):
    headers = json_headers(private_key)
    with connect(http_database_url) as blocker:  # a transaction that holds a lock apply_events needs
        blocker.execute("LOCK TABLE passthrough.memberships IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.post, "/v3/events", headers=headers, json=[event(data_audience_id="aud-new")])
            (pid,) = wait_for(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'passthrough-http'"
                " AND wait_event_type = 'Lock' AND query LIKE '%apply_events%'",
                enabled,
            )
            # by now the batch row and the new external audience id are written, uncommitted
            enabled.execute("SELECT pg_terminate_backend(%s)", (pid,))
            response = pending.result(timeout=30)
        blocker.rollback()
    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "database_unavailable"
    assert stored_counts(enabled) == (0, 0, 0)
    assert enabled.execute("SELECT count(*) FROM passthrough.external_audiences").fetchone()[0] == 0
    # the pool replaces the dead connection: the retry succeeds
    retried = client.post("/v3/events", headers=headers, json=[event(data_audience_id="aud-new")])
    assert retried.status_code == 202
    assert stored_counts(enabled) == (1, 1, 1)
