"""pyapp/web/graphql/plan.py: the SDKs' customer query through its compiled plan, answered with the same
bytes as graphql-core's executor gives, and every other query left to the executor."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from graphql import parse
from http_helpers import TEST_CONFIG, make_client

from pyapp.web.graphql.documents import SchemaState
from pyapp.web.graphql.plan import compile_plan

pytest_plugins = ["http_fixtures"]

TYPES = ("email", "fs_user_id", "vuid")
PYTHON_SDK = ("query($userId: String, $audiences: [String]) {customer(fs_user_id: $userId) "
              "{audiences(subset: $audiences) {edges {node {name state}}}}}")
JS_SDK = 'query {customer(fs_user_id : "u1") {audiences(subset: ["vip","news","gone"]) {edges {node {name state}}}}}'


@pytest.fixture
def data(enabled):
    for name, external in (("vip", "crm-vip"), ("news", "crm-news"), ("old", "crm-old")):
        enabled.execute("SELECT passthrough.put_audience(%s, %s)", (name, external))
    enabled.execute("UPDATE passthrough.audiences SET description = 'big spenders' WHERE name = 'vip'")
    for who, audience, action in (("u1", "crm-vip", "qualify"), ("u1", "crm-news", "qualify"),
                                  ("u2", "crm-vip", "qualify"), ("u1", "crm-old", "disqualify")):
        enabled.execute("SELECT passthrough.apply_event('fs_user_id', %s, %s, %s, 1700000000)", (who, audience, action))
    return enabled


@pytest.fixture
def both(data, http_database_url, public_key):
    """(compiled, general): two apps on the same database, with and without compiled plans."""
    general = dataclasses.replace(TEST_CONFIG, graphql_compiled=False)
    with make_client(http_database_url) as compiled, make_client(http_database_url, general) as executor:
        for client in (compiled, executor):
            client.headers.update({"x-api-key": public_key, "content-type": "application/json"})
        yield compiled, executor


def post(client, query: str, variables=None, **body):
    payload = {"query": query, **body}
    if variables is not None:
        payload["variables"] = variables
    return client.post("/v3/graphql", content=orjson.dumps(payload))


def test_the_javascript_sdks_query_is_read_without_parsing(both, monkeypatch):
    compiled, _ = both
    facade = compiled.app.state.graphql
    parsed = []
    prepare = SchemaState.prepare
    monkeypatch.setattr(SchemaState, "prepare", lambda self, *args: parsed.append(args) or prepare(self, *args))
    before = facade.compiled_answers
    for user in ("u1", "u2", "nobody"):  # a new text per visitor
        answer = post(compiled, JS_SDK.replace('"u1"', f'"{user}"'))
        assert answer.status_code == 200 and "errors" not in answer.json()
    assert parsed == [] and facade.compiled_answers == before + 3


def test_the_sdks_queries_take_the_compiled_path(both):
    compiled, _ = both
    facade = compiled.app.state.graphql
    before = facade.compiled_answers
    answer = post(compiled, PYTHON_SDK, {"userId": "u1", "audiences": ["vip", "news", "old"]})
    assert answer.json() == {"data": {"customer": {"audiences": {"edges": [
        {"node": {"name": "news", "state": "qualified"}}, {"node": {"name": "vip", "state": "qualified"}}]}}}}
    assert post(compiled, JS_SDK).json() == {"data": {"customer": {"audiences": {"edges": [
        {"node": {"name": "news", "state": "qualified"}}, {"node": {"name": "vip", "state": "qualified"}}]}}}}
    assert facade.compiled_answers == before + 2


ALIASED = ('{ c: customer(fs_user_id: "u1") { a: audiences { e: edges { n: node '
           '{ size revision s: state name is_ready description } } } } }')


@pytest.mark.parametrize("query, variables, body", [
    (PYTHON_SDK, {"userId": "u1", "audiences": ["vip", "news"]}, {}),
    (PYTHON_SDK, {"userId": "u1", "audiences": None}, {}),
    (PYTHON_SDK, {"userId": "u1"}, {}),  # subset not sent: every audience
    (PYTHON_SDK, {"userId": "u1", "audiences": ["vip", None]}, {}),
    (PYTHON_SDK, {"userId": "u1", "audiences": "vip"}, {}),  # a lone string: the executor coerces it
    (PYTHON_SDK, {"userId": "nobody"}, {}),
    (PYTHON_SDK, {"userId": ""}, {}),  # PT003 from SQL
    (PYTHON_SDK, {"userId": None}, {}),  # no identifier
    (PYTHON_SDK, {}, {}),
    (PYTHON_SDK, {"userId": 5}, {}),  # a variable of the wrong type
    (PYTHON_SDK, {"userId": "u1", "audiences": [1]}, {}),
    (PYTHON_SDK, {"userId": "u1", "audiences": ["x" * 300]}, {}),
    (PYTHON_SDK, {"userId": "u1"}, {"operationName": "Other"}),
    ("query Q($u: String) {customer(fs_user_id: $u) {audiences {edges {node {name}}}}}", {"u": "u1"},
     {"operationName": "Q"}),
    (JS_SDK, None, {}),
    (JS_SDK, {}, {}),
    (JS_SDK, None, {"operationName": "Other"}),
    ('query {customer(fs_user_id : "u\\"1\\u00e9\\/") {audiences(subset: ["vip","n\\u0065ws"]) {edges {node {name state}}}}}',
     None, {}),
    ('query {customer(fs_user_id : "u1") {audiences(subset: []) {edges {node {name state}}}}}', None, {}),
    ('query {customer(fs_user_id : "") {audiences(subset: ["vip"]) {edges {node {name state}}}}}', None, {}),
    ('query {customer(fs_user_id : "\\u0000") {audiences(subset: ["vip"]) {edges {node {name state}}}}}', None, {}),
    ('query {customer(fs_user_id : "\\ud800") {audiences(subset: ["vip"]) {edges {node {name state}}}}}', None, {}),
    ('query {customer(nope : "u1") {audiences(subset: ["vip"]) {edges {node {name state}}}}}', None, {}),
    ('query {customer(fs_user_id : "u1") {audiences(subset: [' + ",".join(['"vip"'] * 1100) + ']) '
     '{edges {node {name state}}}}}', None, {}),  # more tokens than the parser allows
    ('query {customer(vuid : "vuid_abc") {audiences(subset: ["vip"]) {edges {node {name state}}}}}', None, {}),
    ('{customer(fs_user_id: "u1") {audiences(subset: "vip") {edges {node {name}}}}}', None, {}),
    (ALIASED, None, {}),
    ('{customer(fs_user_id: "u2") {audiences {edges {node {name state} cursor}}}}', None, {}),
    ('{customer(fs_user_id: "u1", email: "a@b") {audiences {edges {node {name}}}}}', None, {}),
])
def test_both_paths_answer_the_same_bytes(both, query, variables, body):
    compiled, executor = both
    expected = post(executor, query, variables, **body)
    for _ in range(2):  # a text's first answer prepares it; the second may come from the fast path
        got = post(compiled, query, variables, **body)
        assert (got.status_code, got.content) == (expected.status_code, expected.content)
        assert got.headers == expected.headers


def test_a_known_key_and_a_prepared_text_skip_the_framework(both, monkeypatch):
    compiled, _ = both
    facade = compiled.app.state.graphql
    variables = {"userId": "u1", "audiences": ["vip"]}
    assert post(compiled, PYTHON_SDK, variables).status_code == 200  # the key and the text are new: the facade
    import pyapp.web.graphql.endpoint as facade_module

    reads = []
    read_json_body = facade_module.read_json_body
    monkeypatch.setattr(facade_module, "read_json_body", lambda *a, **k: reads.append(a) or read_json_body(*a, **k))
    before = facade.compiled_answers
    for user in ("u1", "u2", "nobody"):
        assert post(compiled, PYTHON_SDK, {**variables, "userId": user}).status_code == 200
    assert reads == [] and facade.compiled_answers == before + 3
    # an Origin (a browser) goes through the framework, which adds the CORS headers
    response = compiled.post("/v3/graphql", content=orjson.dumps({"query": PYTHON_SDK, "variables": variables}),
                             headers={"origin": "https://shop.example"})
    assert response.headers["access-control-allow-origin"] == "*" and len(reads) == 1


@pytest.mark.parametrize("query", [
    PYTHON_SDK,
    JS_SDK,
    "query Named($u: String) {customer(email: $u) {audiences {edges {node {size}}}}}",
    ALIASED,
])
def test_the_sdks_shape_compiles(query):
    assert compile_plan(parse(query), TYPES) is not None


@pytest.mark.parametrize("query", [
    '{customer(fs_user_id: "u1") {audiences(at: 1700000000) {edges {node {name}}}}}',  # a past instant
    '{customer(fs_user_id: "u1") {audiences {edges {node {name} cursor}}}}',
    '{customer(fs_user_id: "u1") {audiences {edges {node {name}} pageInfo {hasNextPage}}}}',
    '{customer(fs_user_id: "u1") {audiences {edges {node {...F}}}}} fragment F on Audience {name}',
    '{customer(fs_user_id: "u1") {audiences {edges {node {name @include(if: true)}}}}}',
    '{customer(fs_user_id: "u1") {audiences {edges {node {name __typename}}}}}',
    '{customer(fs_user_id: "u1") {audiences {edges {node {name}}}} audiences {edges {node {name}}}}',
    '{customer(fs_user_id: "u1", email: "a@b") {audiences {edges {node {name}}}}}',
    '{customer(other: "u1") {audiences {edges {node {name}}}}}',
    "query($u: String!) {customer(fs_user_id: $u) {audiences {edges {node {name}}}}}",  # non-null: refused if null
    'query($u: String = "u1") {customer(fs_user_id: $u) {audiences {edges {node {name}}}}}',
    "query($s: [String!]) {customer(fs_user_id: \"u1\") {audiences(subset: $s) {edges {node {name}}}}}",
    "query A {customer(fs_user_id: \"u1\") {audiences {edges {node {name}}}}} query B {audiences {edges {node {name}}}}",
])
def test_other_shapes_are_left_to_the_executor(query):
    assert compile_plan(parse(query), TYPES) is None


def test_the_fast_answer_has_the_framework_headers_without_a_cors_policy(data, http_database_url, public_key):
    no_cors = dataclasses.replace(TEST_CONFIG, cors_origins=())
    general = dataclasses.replace(no_cors, graphql_compiled=False)
    with make_client(http_database_url, no_cors) as compiled, make_client(http_database_url, general) as executor:
        for client in (compiled, executor):
            client.headers.update({"x-api-key": public_key, "content-type": "application/json"})
        expected = post(executor, JS_SDK)
        for _ in range(2):
            got = post(compiled, JS_SDK)
            assert (got.content, got.headers) == (expected.content, expected.headers)
        assert "vary" not in expected.headers
