"""/v3/segments over HTTP: the ODP segment endpoints on top of the audience functions."""

from __future__ import annotations

import orjson
import pytest
from http_helpers import TIMESTAMP, json_headers
from sqlhelpers import event, expect_error

pytest_plugins = ["http_fixtures"]


def body(external_id="aud-1", **extra):
    return {"definition": {"external": {"external_audience_id": external_id}}, **extra}


@pytest.fixture
def admin(client, private_key):
    """Requests with the private key: admin.get(path), admin.post(path, json=...), ..."""

    class Admin:
        def __getattr__(self, method):
            def call(path, **kwargs):
                return client.request(method.upper(), path, headers=json_headers(private_key), **kwargs)

            return call

    return Admin()


def test_create_then_read_a_segment(admin, db):
    response = admin.post("/v3/segments/seg_a", json=body(description="Buyers", metadata={"owner": "crm"}))
    assert (response.status_code, response.json()) == (200, {"revision": 1})
    segment = admin.get("/v3/segments/seg_a").json()
    assert {k: segment[k] for k in ("segment_id", "revision", "description", "metadata", "definition")} == {
        "segment_id": "seg_a",
        "revision": 1,
        "description": "Buyers",
        "metadata": {"owner": "crm"},
        "definition": {"external": {"external_audience_id": "aud-1"}},
    }
    assert (segment["is_ready"], segment["size"]) == (True, 0)
    assert segment["created_at"].endswith("Z") and segment["updated_at"] == segment["created_at"]
    assert db.execute("SELECT name, description FROM passthrough.audiences").fetchall() == [("seg_a", "Buyers")]


def test_a_segment_shows_its_exact_size(admin, enabled, private_key, client):
    client.post(
        "/v3/events",
        headers=json_headers(private_key),
        json=[event(identifiers={"fs_user_id": f"u{i}"}) for i in range(3)],
    )
    admin.put("/v3/segments/seg_a", json=body())
    assert admin.get("/v3/segments/seg_a").json()["size"] == 3


def test_list_segments(admin):
    assert admin.get("/v3/segments").json() == {"segment_ids": []}
    for name, external in (("seg_b", "x-b"), ("seg_a", "x-a"), ("seg_c", "x-c")):
        admin.post(f"/v3/segments/{name}", json=body(external))
    assert admin.get("/v3/segments").json() == {"segment_ids": ["seg_a", "seg_b", "seg_c"]}


def test_a_trailing_slash_is_no_path_of_the_api(client, public_key):
    for path in ("/v3/segments/", "/v3/graphql/", "/v3/events/"):
        response = client.get(path, headers={"x-api-key": public_key}, follow_redirects=False)
        assert response.status_code == 404, (path, response.status_code)  # not a 307 to the path without it
        assert response.json()["detail"]["code"] == "not_found"


def test_list_segments_returns_every_page(admin, db):
    db.execute("SELECT passthrough.create_audience(format('s%s', lpad(i::text, 4, '0')), format('x%s', i))"
               " FROM generate_series(1, 1001) AS i")
    ids = admin.get("/v3/segments").json()["segment_ids"]
    assert len(ids) == 1001 and ids[0] == "s0001" and ids[-1] == "s1001" and ids == sorted(ids)


def test_put_creates_updates_and_keeps_the_revision_for_a_no_op(admin):
    assert admin.put("/v3/segments/seg_a", json=body()).json() == {"revision": 1}
    assert admin.put("/v3/segments/seg_a", json=body()).json() == {"revision": 1}
    assert admin.put("/v3/segments/seg_a", json=body(description="new")).json() == {"revision": 2}
    assert admin.put("/v3/segments/seg_a", json=body("aud-2", description="new")).json() == {"revision": 3}
    segment = admin.get("/v3/segments/seg_a").json()
    assert segment["definition"] == {"external": {"external_audience_id": "aud-2"}} and segment["revision"] == 3


def test_a_read_only_revision_in_the_body_is_ignored(admin):
    admin.put("/v3/segments/seg_a", json=body())
    round_trip = {k: admin.get("/v3/segments/seg_a").json()[k] for k in ("revision", "description", "metadata", "definition")}
    assert admin.put("/v3/segments/seg_a", json=round_trip).json() == {"revision": 1}


def test_creating_an_existing_segment_is_409(admin):
    admin.post("/v3/segments/seg_a", json=body())
    response = admin.post("/v3/segments/seg_a", json=body())
    assert response.status_code == 409
    assert (response.json()["detail"]["code"], response.json()["detail"]["sqlstate"]) == ("audience_exists", "PT005")


@pytest.mark.parametrize("method, path", [("post", "/v3/segments/seg_b"), ("put", "/v3/segments/seg_b"),
                                          ("post", "/v3/segments/seg_b:validate")])
def test_an_external_id_linked_to_another_segment_is_409(admin, db, method, path):
    admin.post("/v3/segments/seg_a", json=body("aud-1"))
    response = getattr(admin, method)(path, json=body("aud-1"))
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert (detail["code"], detail["field"]) == ("audience_conflict", "external_audience_id")
    assert "seg_a" in detail["message"]
    assert db.execute("SELECT count(*) FROM passthrough.audiences").fetchone()[0] == 1


@pytest.mark.parametrize("segment_id", ["Seg_A", "seg-a", "ségment", "a" * 256])
def test_an_id_outside_the_allowed_characters_is_400(admin, db, segment_id):
    for method in ("post", "put"):
        response = getattr(admin, method)(f"/v3/segments/{segment_id}", json=body())
        assert response.status_code == 400
        detail = response.json()["detail"]
        assert (detail["code"], detail["sqlstate"], detail["field"]) == ("invalid_audience", "PT007", "name")
        assert "a-z, 0-9 and _" in detail["hint"]
    assert db.execute("SELECT count(*) FROM passthrough.audiences").fetchone()[0] == 0


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"definition": {"sql": {"query": "select 1"}}}, "definition.sql"),
        ({"definition": {"external": {"external_audience_id": "a"}, "rule": {}}}, "definition.rule"),
        ({"definition": "aud-1"}, "definition"),
        ({"definition": {"external": "aud-1"}}, "definition.external"),
        ({"definition": {"external": {"external_audience_id": "a", "extra": 1}}}, "definition.external.extra"),
        ({"definition": {"external": {"external_audience_id": 7}}}, "definition.external.external_audience_id"),
        ({**body(), "name": "x"}, "name"),
        ({**body(), "description": 5}, "description"),
    ],
    ids=["unknown kind", "second kind", "not an object", "external not an object", "unknown external field",
         "external id not a string", "unknown top-level field", "description not a string"],
)
def test_a_body_of_the_wrong_shape_is_400_naming_the_field(admin, db, payload, field):
    for method, path in (("post", "/v3/segments/seg_a"), ("put", "/v3/segments/seg_a"),
                         ("post", "/v3/segments/seg_a:validate")):
        response = getattr(admin, method)(path, json=payload)
        assert response.status_code == 400, (method, path, response.text)
        detail = response.json()["detail"]
        assert (detail["code"], detail["field"]) == ("invalid_audience", field)
        assert detail["message"].startswith(f"{field}: ")
    assert db.execute("SELECT count(*) FROM passthrough.audiences").fetchone()[0] == 0


@pytest.mark.parametrize(
    "payload, field",
    [
        ({}, "external_audience_id"),
        ({"definition": {}}, "external_audience_id"),
        ({"definition": {"external": {}}}, "external_audience_id"),
        (body(""), "external_audience_id"),
        (body("x" * 256), "external_audience_id"),
        (body(description="d" * 4097), "description"),
        (body(metadata=[1]), "metadata"),
        (body(metadata=None), "metadata"),
    ],
    ids=["empty body", "empty definition", "no external id", "empty external id", "long external id",
         "long description", "metadata an array", "metadata null"],
)
def test_invalid_values_are_refused_by_sql_naming_the_field(admin, db, payload, field):
    response = admin.put("/v3/segments/seg_a", json=payload)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert (detail["code"], detail["sqlstate"], detail["field"]) == ("invalid_audience", "PT007", field)
    assert db.execute("SELECT count(*) FROM passthrough.audiences").fetchone()[0] == 0


@pytest.mark.parametrize(
    "content, content_type, code",
    [(b"{", "application/json", "malformed_json"), (b"[]", "application/json", "invalid_audience"),
     (orjson.dumps(body()), "text/plain", "unsupported_media_type"), (b"", "application/json", "empty_body")],
    ids=["malformed", "an array", "wrong content type", "empty"],
)
def test_an_unreadable_body_is_400(client, private_key, content, content_type, code):
    headers = {"x-api-key": private_key, "content-type": content_type}
    response = client.put("/v3/segments/seg_a", headers=headers, content=content)
    assert response.status_code == 400 and response.json()["detail"]["code"] == code


def test_get_or_delete_a_missing_segment_is_404(admin):
    for method in ("get", "delete"):
        response = getattr(admin, method)("/v3/segments/nope")
        assert response.status_code == 404
        assert (response.json()["detail"]["code"], response.json()["detail"]["sqlstate"]) == ("audience_not_found", "PT006")


def test_delete_a_segment(admin, db):
    admin.post("/v3/segments/seg_a", json=body())
    response = admin.delete("/v3/segments/seg_a")
    assert (response.status_code, response.json()) == (200, {"segment_id": "seg_a", "deleted": True})
    assert admin.get("/v3/segments/seg_a").status_code == 404
    assert admin.get("/v3/segments").json() == {"segment_ids": []}


def test_validate_checks_without_saving(admin, db):
    response = admin.post("/v3/segments/seg_a:validate", json=body(description="d"))
    assert (response.status_code, response.json()) == (200, {"segment_id": "seg_a", "valid": True})
    assert db.execute("SELECT count(*) FROM passthrough.audiences").fetchone()[0] == 0
    bad = admin.post("/v3/segments/Bad:validate", json=body())
    assert bad.status_code == 400 and bad.json()["detail"]["field"] == "name"
    assert admin.post("/v3/segments/seg_a:validate", json=body("")).status_code == 400


def test_validate_is_only_a_post(admin):
    # other methods on "<id>:validate" address a segment whose id contains a colon: no such segment
    assert admin.get("/v3/segments/seg_a:validate").status_code == 404
    assert admin.delete("/v3/segments/seg_a:validate").status_code == 404
    assert admin.put("/v3/segments/seg_a:validate", json=body()).status_code == 400


def test_a_wrong_method_is_405_listing_the_allowed_ones(client, private_key):
    response = client.patch("/v3/segments/seg_a", headers=json_headers(private_key), json=body())
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST", "PUT", "DELETE"}
    assert response.json()["detail"]["code"] == "method_not_allowed"
    assert TIMESTAMP.match(response.json()["timestamp"])


def test_a_nul_character_is_400_not_500(admin, db):
    response = admin.put("/v3/segments/seg_a", json=body(description="a\u0000b"))
    assert response.status_code == 400 and response.json()["detail"]["code"] == "invalid_input"
    assert admin.get("/v3/segments/a%00b").status_code == 400
    assert admin.post("/v3/segments/seg_a", json=body("crm\u0000x")).status_code == 400
    assert admin.put("/v3/segments/seg_a", json=body(metadata={"k": "\u0000"})).status_code == 400
    assert db.execute("SELECT count(*) FROM passthrough.audiences").fetchone()[0] == 0


def test_a_segment_may_carry_a_membership_ttl(admin, db):
    assert admin.post("/v3/segments/seg_a", json=body(ttl_seconds=3600)).json() == {"revision": 1}
    assert admin.get("/v3/segments/seg_a").json()["ttl_seconds"] == 3600
    assert db.execute("SELECT ttl::text FROM passthrough.audiences").fetchone() == ("01:00:00",)
    assert admin.put("/v3/segments/seg_a", json=body(ttl_seconds=3600)).json() == {"revision": 1}  # no-op
    # the README's body, without ttl_seconds: the ttl stays (the description changes, so the revision grows)
    assert admin.put("/v3/segments/seg_a", json=body(description="VIP")).json() == {"revision": 2}
    assert admin.get("/v3/segments/seg_a").json()["ttl_seconds"] == 3600
    assert admin.put("/v3/segments/seg_a", json=body(description="VIP", ttl_seconds=None)).json() == {"revision": 3}
    assert admin.get("/v3/segments/seg_a").json()["ttl_seconds"] is None
    # a PUT that creates a segment without ttl_seconds creates it without one
    assert admin.put("/v3/segments/seg_b", json=body("aud-b")).json() == {"revision": 1}
    assert admin.get("/v3/segments/seg_b").json()["ttl_seconds"] is None


def test_put_audience_keeps_the_ttl_only_when_asked(db):
    db.execute("SELECT passthrough.create_audience('seg_a', 'aud-a', p_ttl => interval '1 hour')")
    db.execute("SELECT passthrough.put_audience('seg_a', 'aud-a', 'd', p_keep_ttl => true)")
    assert db.execute("SELECT ttl::text FROM passthrough.audiences").fetchone() == ("01:00:00",)
    db.execute("SELECT passthrough.put_audience('seg_a', 'aud-a', 'd')")  # SQL: every field, NULL removes it
    assert db.execute("SELECT ttl FROM passthrough.audiences").fetchone() == (None,)
    error = expect_error(db, "SELECT passthrough.put_audience('seg_a', 'aud-a', p_ttl => interval '1 hour',"
                             " p_keep_ttl => true)", sqlstate="PT007")
    assert error.detail == "field: ttl"


@pytest.mark.parametrize(
    ("ttl", "status", "code", "field"),
    [("1h", 400, "invalid_audience", "ttl_seconds"), (1.5, 400, "invalid_audience", "ttl_seconds"),
     (True, 400, "invalid_audience", "ttl_seconds"), (10**12, 400, "invalid_audience", "ttl"),
     (10**20, 400, "invalid_audience", "ttl_seconds"), (9_999_999_999 + 1, 400, "invalid_audience", "ttl"),
     (0, 400, "invalid_audience", "ttl"), (-5, 400, "invalid_audience", "ttl")],
)
def test_an_invalid_ttl_is_refused_naming_the_field(admin, db, ttl, status, code, field):
    response = admin.post("/v3/segments/seg_a", json=body(ttl_seconds=ttl))
    assert response.status_code == status
    assert (response.json()["detail"]["code"], response.json()["detail"]["field"]) == (code, field)
    assert db.execute("SELECT count(*) FROM passthrough.audiences").fetchone() == (0,)
