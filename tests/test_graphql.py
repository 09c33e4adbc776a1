"""The GraphQL facade (pyapp/web/graphql/): POST /v3/graphql and the GraphiQL page, on the real app
against the test's own database."""

from __future__ import annotations

import dataclasses
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from http_helpers import create_key
from sqlhelpers import reset_data

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

from pyapp import errors
from pyapp.db import connect
from pyapp.web import ApiConfig, create_app
from pyapp.web.graphql.endpoint import LISTENER_APPLICATION_NAME, GraphQLFacade
from pyapp.web.graphql.schema import decode_cursor, encode_cursor

CONFIG = ApiConfig(pool_min_size=1, pool_max_size=4, pool_timeout=2.0)
TS = 1_700_000_000

# What the Python, Go and Java SDKs send (optimizely/odp/odp_segment_api_manager.py), byte for byte.
SDK_QUERY = (
    "query($userId: String, $audiences: [String]) {customer(fs_user_id: $userId) "
    "{audiences(subset: $audiences) {edges {node {name state}}}}}"
)


def js_query(user_id: str, segments: list[str]) -> str:
    """What the JavaScript SDK sends: literals inline, vuid for ids starting vuid_."""
    key = "vuid" if user_id.startswith("vuid_") else "fs_user_id"
    subset = ",".join(f'"{s}"' for s in segments)
    return f'query {{customer({key} : "{user_id}") {{audiences(subset: [{subset}]) {{edges {{node {{name state}}}}}}}}}}'


class Gql:
    def __init__(self, client: TestClient, key: str | None) -> None:
        self.client = client
        self.key = key

    def post(self, query: str, variables: dict[str, Any] | None = None, *, key: str | None = "default",
             **body: Any) -> httpx.Response:
        headers = {"content-type": "application/json"}
        key = self.key if key == "default" else key
        if key is not None:
            headers["x-api-key"] = key
        payload: dict[str, Any] = {"query": query, **body}
        if variables is not None:
            payload["variables"] = variables
        return self.client.post("/v3/graphql", content=orjson.dumps(payload), headers=headers)

    def ok(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.post(query, variables)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def errors(self, query: str, variables: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict]]:
        """A request that fails with GraphQL errors: HTTP 200, every error well-formed."""
        response = self.post(query, variables)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["errors"], body
        for error in body["errors"]:
            assert_error_shape(error)
        return body, body["errors"]

    @property
    def facade(self) -> GraphQLFacade:
        return self.client.app.state.graphql


def assert_error_shape(error: dict[str, Any]) -> None:
    """What the SDKs need: message, locations ([{line, column}]), extensions.classification and code."""
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["locations"], list), error
    for location in error["locations"]:
        assert set(location) == {"line", "column"}, error
    assert isinstance(error["extensions"]["classification"], str), error
    assert isinstance(error["extensions"]["code"], str), error


# One database and one running app for the module (creating either per test would cost more than
# the tests); each test starts with no data. Tests that change identifier types get their own.


@pytest.fixture(scope="module")
def module_db_url(databases, migrated_template: str) -> Iterator[str]:
    name = f"test_graphql_{uuid.uuid4().hex}"
    url = databases.create(name, template=migrated_template)
    yield url
    databases.drop(name)


@pytest.fixture(scope="module")
def keys(module_db_url: str) -> dict[str, str]:
    with connect(module_db_url, autocommit=True) as conn:
        return {scope: create_key(conn, f"graphql-{scope}", scope) for scope in ("public", "private")}


@pytest.fixture(scope="module", params=["compiled", "general"])
def config(request: pytest.FixtureRequest) -> ApiConfig:
    """Every test of the module runs twice: with the SDKs' query answered through its compiled plan
    (pyapp/web/graphql/plan.py), and with graphql-core's executor answering everything."""
    return dataclasses.replace(CONFIG, graphql_compiled=request.param == "compiled")


@pytest.fixture(scope="module")
def app_client(module_db_url: str, config: ApiConfig) -> Iterator[TestClient]:
    with TestClient(create_app(module_db_url, config=config)) as client:
        yield client


@pytest.fixture
def db(module_db_url: str) -> Iterator[psycopg.Connection]:
    """The module's database, emptied of audiences, memberships and events; passthrough off."""
    with connect(module_db_url, autocommit=True) as conn:
        reset_data(conn)
        conn.execute("SELECT passthrough.disable()")
        yield conn


@pytest.fixture
def gql(app_client: TestClient, keys: dict[str, str], db: psycopg.Connection) -> Gql:
    return Gql(app_client, keys["public"])


@pytest.fixture
def own_app(db_url: str, conn: psycopg.Connection, config: ApiConfig) -> Iterator[Gql]:
    """An app on a database of the test's own, for tests that change the identifier types."""
    key = create_key(conn, "own", "public")
    with TestClient(create_app(db_url, config=config)) as client:
        yield Gql(client, key)


@pytest.fixture
def populated(db: psycopg.Connection) -> psycopg.Connection:
    """u1 qualified for seg_a and seg_c, disqualified from seg_b, qualified for an undefined audience."""
    conn = db
    conn.execute("SELECT passthrough.enable()")
    for name in ("seg_a", "seg_b", "seg_c"):
        conn.execute("SELECT passthrough.put_audience(%s, %s, %s)", (name, f"ext-{name}", f"about {name}"))
    qualify(conn, "fs_user_id", "u1", "ext-seg_a", "ext-seg_b", "ext-seg_c", "ext-undefined")
    disqualify(conn, "fs_user_id", "u1", "ext-seg_b")
    qualify(conn, "fs_user_id", "u2", "ext-seg_a")
    return conn


def qualify(conn: psycopg.Connection, id_type: str, identifier: str, *audiences: str, ts: int = TS) -> None:
    for audience in audiences:
        conn.execute("SELECT passthrough.apply_event(%s, %s, %s, 'qualify', %s)", (id_type, identifier, audience, ts))


def disqualify(conn: psycopg.Connection, id_type: str, identifier: str, *audiences: str, ts: int = TS + 1) -> None:
    for audience in audiences:
        conn.execute("SELECT passthrough.apply_event(%s, %s, %s, 'disqualify', %s)", (id_type, identifier, audience, ts))


def names(data: dict[str, Any]) -> list[str]:
    return [edge["node"]["name"] for edge in data["customer"]["audiences"]["edges"]]


# --------------------------------------------------------------------------- schema


INTROSPECT_ARGS = """{ __schema { queryType { fields { name args { name type { kind name ofType { kind name } } } } } }
  __type(name: "Customer") { fields { name args { name type { kind name ofType { kind name } } } } } }"""


def field_args(data: dict[str, Any], field_name: str, *, type_: str = "Query") -> dict[str, Any]:
    fields = data["__schema"]["queryType"]["fields"] if type_ == "Query" else data["__type"]["fields"]
    (found,) = [f for f in fields if f["name"] == field_name]
    return {a["name"]: a["type"] for a in found["args"]}


def test_customer_has_one_nullable_string_argument_per_identifier_type(conn, own_app):
    conn.execute("SELECT passthrough.add_identifier_type('phone', false)")  # low confidence too: an argument
    wait_for(lambda: "phone" in (own_app.facade.identifier_types or ()))  # the NOTIFY reached the app
    data = own_app.ok(INTROSPECT_ARGS)
    string = {"kind": "SCALAR", "name": "String", "ofType": None}
    assert field_args(data, "customer") == {
        t: string for t in ("customer_id", "email", "fs_user_id", "phone", "vuid")}
    # nullable list of nullable strings, as the SDKs declare $audiences: [String]
    assert field_args(data, "audiences", type_="Customer") == {
        "subset": {"kind": "LIST", "name": None, "ofType": {"kind": "SCALAR", "name": "String"}},
        "at": {"kind": "SCALAR", "name": "Float", "ofType": None},  # membership as of a past instant
    }
    assert field_args(data, "audiences") == {
        "first": {"kind": "SCALAR", "name": "Int", "ofType": None},
        "after": string,
    }


def test_the_schema_lists_every_node_field(gql):
    data = gql.ok('{ __type(name: "Audience") { fields { name type { kind ofType { name } name } } } }')
    assert {f["name"]: (f["type"]["kind"], f["type"]["name"] or f["type"]["ofType"]["name"])
            for f in data["__type"]["fields"]} == {
        "name": ("NON_NULL", "String"),
        "state": ("SCALAR", "String"),
        "description": ("SCALAR", "String"),
        "is_ready": ("NON_NULL", "Boolean"),
        "revision": ("NON_NULL", "Int"),
        "size": ("NON_NULL", "Int"),
    }


# --------------------------------------------------------------------------- the SDKs' queries


def test_variables_form_as_the_python_go_and_java_sdks_send_it(populated, gql):
    data = gql.ok(SDK_QUERY, {"userId": "u1", "audiences": ["seg_a", "seg_b", "seg_c"]})
    assert data == {"customer": {"audiences": {"edges": [
        {"node": {"name": "seg_a", "state": "qualified"}},
        {"node": {"name": "seg_c", "state": "qualified"}},
    ]}}}


def test_inline_form_as_the_javascript_sdk_sends_it(populated, gql):
    assert gql.ok(js_query("u1", ["seg_a", "seg_b"])) == {
        "customer": {"audiences": {"edges": [{"node": {"name": "seg_a", "state": "qualified"}}]}}
    }
    # an anonymous visitor: the SDK asks by vuid, low-confidence, which keys no membership
    assert gql.ok(js_query("vuid_abc", ["seg_a", "seg_b", "seg_c"])) == {"customer": {"audiences": {"edges": []}}}


def test_every_node_field(populated, gql):
    qualify(populated, "fs_user_id", "u2", "ext-seg_c")
    populated.execute("SELECT passthrough.put_audience('seg_c', 'ext-seg_c', 'changed')")
    data = gql.ok('{ customer(fs_user_id: "u1") { audiences { edges { cursor node {'
                  " name state description is_ready revision size } } pageInfo { hasNextPage endCursor } } } }")
    connection = data["customer"]["audiences"]
    assert [e["node"] for e in connection["edges"]] == [
        {"name": "seg_a", "state": "qualified", "description": "about seg_a", "is_ready": True, "revision": 1, "size": 2},
        {"name": "seg_c", "state": "qualified", "description": "changed", "is_ready": True, "revision": 2, "size": 2},
    ]
    assert [decode_cursor(e["cursor"]) for e in connection["edges"]] == ["seg_a", "seg_c"]
    assert connection["pageInfo"] == {"hasNextPage": False, "endCursor": connection["edges"][-1]["cursor"]}


# --------------------------------------------------------------------------- subset semantics (SQL's)


@pytest.mark.parametrize(
    "subset, expected",
    [
        (None, ["seg_a", "seg_c"]),  # no subset: all the customer's defined audiences
        ([], []),
        (["seg_c", "seg_a"], ["seg_a", "seg_c"]),  # name order, whatever the order asked
        (["seg_b"], []),  # disqualified
        (["nope", "seg_c", None, "SEG_A"], ["seg_c"]),  # unknown names and nulls ignored; names are exact
        (["undefined", "ext-undefined"], []),  # qualified, but no definition links to it
    ],
)
def test_subset(populated, gql, subset, expected):
    assert names(gql.ok(SDK_QUERY, {"userId": "u1", "audiences": subset})) == expected


def test_subset_absent_and_a_single_string_coerced_to_a_list(populated, gql):
    assert names(gql.ok('{ customer(fs_user_id: "u1") { audiences { edges { node { name } } } } }')) == ["seg_a", "seg_c"]
    assert names(gql.ok('{ customer(fs_user_id: "u1") { audiences(subset: "seg_c") { edges { node { name } } } } }')) == [
        "seg_c"
    ]


def test_a_definition_arriving_later_shows_the_membership(populated, gql):
    assert names(gql.ok(SDK_QUERY, {"userId": "u1", "audiences": ["late"]})) == []
    populated.execute("SELECT passthrough.put_audience('late', 'ext-undefined')")
    assert names(gql.ok(SDK_QUERY, {"userId": "u1", "audiences": ["late"]})) == ["late"]


def test_unknown_customer_gets_an_empty_connection(populated, gql):
    for user in ("nobody", "u1 "):
        assert gql.ok(SDK_QUERY, {"userId": user, "audiences": ["seg_a"]}) == {"customer": {"audiences": {"edges": []}}}
    assert gql.ok('{ customer(email: "u1") { audiences { edges { node { name } } } } }') == {
        "customer": {"audiences": {"edges": []}}
    }


def test_one_connection_checkout_per_customer_query_whatever_the_number_of_audiences(populated, gql):
    for i in range(20):
        populated.execute("SELECT passthrough.put_audience(%s, %s)", (f"many_{i:02}", f"ext-many-{i}"))
        qualify(populated, "fs_user_id", "u1", f"ext-many-{i}")
    pool = gql.client.app.state.read_pool
    gql.ok(SDK_QUERY, {"userId": "u1", "audiences": ["seg_a"]})  # warm: the schema is loaded
    before = pool.get_stats()["requests_num"]
    data = gql.ok(SDK_QUERY, {"userId": "u1", "audiences": None})
    assert len(names(data)) == 22
    # the warm-up found the key valid, so the single SQL call that answers the query checks it too: one checkout
    assert pool.get_stats()["requests_num"] - before == 1


# --------------------------------------------------------------------------- errors


def test_invalid_identifier_is_invalid_identifier_exception_and_customer_null(populated, gql):
    for user_id in ("", "x" * 513):
        body, (error,) = gql.errors(SDK_QUERY, {"userId": user_id, "audiences": ["seg_a"]})
        assert body["data"] == {"customer": None}
        assert error["extensions"] == {
            "classification": "DataFetchingException", "code": "INVALID_IDENTIFIER_EXCEPTION", "sqlstate": "PT003"
        }
        assert error["message"] == (
            "invalid identifier: the identifier must be a non-empty string of at most 512 characters"
        )
        assert error["path"] == ["customer", "audiences"]
        assert error["locations"] == [{"line": 1, "column": SDK_QUERY.index("audiences(") + 1}]


def test_text_postgresql_cannot_store_is_invalid_input(populated, gql):
    # psycopg refuses a NUL character before sending: pyapp.errors maps that to 400 invalid_input
    with pytest.raises(psycopg.DataError) as caught:
        populated.execute("SELECT %s::text", ("a\x00b",))
    assert errors.report(caught.value) == errors.ErrorReport(
        400, "invalid_input", "PostgreSQL text fields cannot contain NUL (0x00) bytes"
    )
    for variables in ({"userId": "u\x001"}, {"userId": "u1", "audiences": ["seg_a\x00"]}):
        body, (error,) = gql.errors(SDK_QUERY, variables)
        assert body["data"] == {"customer": None}
        assert error["message"] == "PostgreSQL text fields cannot contain NUL (0x00) bytes"
        assert error["extensions"] == {"classification": "DataFetchingException", "code": "INVALID_INPUT"}


@pytest.mark.parametrize(
    "arguments, got",
    [("", "none"), ('(fs_user_id: null)', "none"), ('(vuid: "v", email: "e")', "email, vuid")],
)
def test_customer_needs_exactly_one_identifier(gql, arguments, got):
    body, (error,) = gql.errors(f"{{ customer{arguments} {{ audiences {{ edges {{ cursor }} }} }} }}")
    assert body["data"] == {"customer": None}
    assert error["message"] == (
        f"invalid identifier: customer takes exactly one identifier argument, got {got}; "
        "the identifier types are customer_id, email, fs_user_id, vuid"
    )
    assert error["path"] == ["customer"]
    assert error["locations"] == [{"line": 1, "column": 3}]
    assert error["extensions"] == {"classification": "DataFetchingException", "code": "INVALID_IDENTIFIER_EXCEPTION"}


def test_variables_null_is_no_identifier(gql):
    body, (error,) = gql.errors(SDK_QUERY, {"userId": None})
    assert error["extensions"]["code"] == "INVALID_IDENTIFIER_EXCEPTION" and "got none" in error["message"]


def test_unknown_identifier_type_is_a_validation_error(gql):
    body, (error,) = gql.errors('{ customer(phone: "1") { audiences { edges { cursor } } } }')
    assert "data" not in body  # nothing was executed
    assert error == {
        "message": "Unknown argument 'phone' on field 'Query.customer'.",
        "locations": [{"line": 1, "column": 12}],
        "extensions": {"classification": "ValidationError", "code": "GRAPHQL_VALIDATION_FAILED"},
    }


def test_syntax_error(gql):
    body, (error,) = gql.errors('{ customer(fs_user_id: "u1" { audiences }')
    assert "data" not in body
    assert error["extensions"] == {"classification": "InvalidSyntax", "code": "GRAPHQL_PARSE_FAILED"}
    assert error["message"].startswith("Syntax Error:") and error["locations"] == [{"line": 1, "column": 29}]


def test_unknown_field_and_string_declared_non_null(gql):
    _, errors = gql.errors('{ customer(fs_user_id: "u1") { audiences { edges { node { name colour } } } } }')
    assert errors[0]["message"] == "Cannot query field 'colour' on type 'Audience'."
    # Declaring String! for a nullable argument is allowed (a stricter variable); the reverse is not.
    assert gql.ok('query($u: String!) { customer(fs_user_id: $u) { audiences { edges { cursor } } } }', {"u": "x"})
    _, errors = gql.errors('query($n: Int) { audiences(first: $n, after: $n) { edges { cursor } } }')
    assert errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_variable_of_the_wrong_type_is_bad_user_input(gql):
    body, (error,) = gql.errors(SDK_QUERY, {"userId": 5})
    assert "data" not in body
    assert error["message"] == "Variable '$userId' has invalid value: String cannot represent a non string value: 5"
    assert error["extensions"] == {"classification": "ValidationError", "code": "BAD_USER_INPUT"}
    assert error["locations"] == [{"line": 1, "column": 7}]


def test_mutations_and_ambiguous_operations_are_refused(gql):
    _, (error,) = gql.errors("mutation { customer }")
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    two = "query A { audiences { edges { cursor } } } query B { audiences { edges { cursor } } }"
    _, (error,) = gql.errors(two)
    assert error["message"] == "Must provide operation name if query contains multiple operations."
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert gql.post(two, operationName="B").json() == {"data": {"audiences": {"edges": []}}}


@pytest.mark.parametrize(
    "content, content_type, status, code",
    [
        (b"not json", "application/json", 400, "MALFORMED_JSON"),
        (b"[]", "application/json", 400, "INVALID_REQUEST"),
        (b'{"variables": {}}', "application/json", 400, "INVALID_REQUEST"),
        (b'{"query": "{ audiences { edges { cursor } } }", "variables": []}', "application/json", 400, "INVALID_REQUEST"),
        (b'{"query": "{ audiences { edges { cursor } } }", "operationName": 1}', "application/json", 400, "INVALID_REQUEST"),
        (b'{"query": "{ audiences { edges { cursor } } }"}', "application/graphql", 400, "UNSUPPORTED_MEDIA_TYPE"),
        (b'{"query": "' + b" " * (1 << 20) + b'{ x }"}', "application/json", 413, "BODY_TOO_LARGE"),
    ],
)
def test_malformed_requests_get_4xx_with_graphql_shaped_errors(gql, content, content_type, status, code):
    response = gql.client.post(
        "/v3/graphql", content=content, headers={"content-type": content_type, "x-api-key": gql.key}
    )
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert_error_shape(error)
    assert error["extensions"] == {"classification": "RequestError", "code": code}


# --------------------------------------------------------------------------- audiences listing


def test_audiences_are_keyset_paginated_with_exact_sizes(populated, gql):
    query = "query($first: Int, $after: String) { audiences(first: $first, after: $after) {" \
            " edges { cursor node { name state revision description is_ready size } } pageInfo { hasNextPage endCursor } } }"
    pages = []
    after = None
    while True:
        connection = gql.ok(query, {"first": 2, "after": after})["audiences"]
        pages.append([e["node"]["name"] for e in connection["edges"]])
        assert connection["pageInfo"]["endCursor"] == connection["edges"][-1]["cursor"]
        assert [decode_cursor(e["cursor"]) for e in connection["edges"]] == pages[-1]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert pages == [["seg_a", "seg_b"], ["seg_c"]]
    everything = gql.ok(query, {})["audiences"]  # default page: 100
    assert [e["node"] for e in everything["edges"]] == [
        {"name": "seg_a", "state": None, "revision": 1, "description": "about seg_a", "is_ready": True, "size": 2},
        {"name": "seg_b", "state": None, "revision": 1, "description": "about seg_b", "is_ready": True, "size": 0},
        {"name": "seg_c", "state": None, "revision": 1, "description": "about seg_c", "is_ready": True, "size": 1},
    ]
    assert everything["pageInfo"]["hasNextPage"] is False
    empty = gql.ok(query, {"first": 0})["audiences"]
    assert empty == {"edges": [], "pageInfo": {"hasNextPage": True, "endCursor": None}}
    last = gql.ok(query, {"after": encode_cursor("seg_c")})["audiences"]
    assert last == {"edges": [], "pageInfo": {"hasNextPage": False, "endCursor": None}}


def test_a_page_of_1000_and_no_more(db, gql):
    db.execute(
        "SELECT passthrough.put_audience(format('a%s', lpad(i::text, 4, '0')), format('ext-%s', i))"
        " FROM generate_series(1, 1001) i"
    )
    query = "query($after: String) { audiences(first: 1000, after: $after) { edges { node { name } } pageInfo { hasNextPage endCursor } } }"
    first = gql.ok(query, {})["audiences"]
    assert len(first["edges"]) == 1000 and first["pageInfo"]["hasNextPage"] is True
    second = gql.ok(query, {"after": first["pageInfo"]["endCursor"]})["audiences"]
    assert second["edges"] == [{"node": {"name": "a1001"}}] and second["pageInfo"]["hasNextPage"] is False


@pytest.mark.parametrize("first", [1001, -1])
def test_first_is_between_0_and_1000(gql, first):
    body, (error,) = gql.errors(f"{{ audiences(first: {first}) {{ edges {{ cursor }} }} }}")
    assert body["data"] is None  # audiences is non-null
    assert error["message"] == f"first must be between 0 and 1000, got {first}"
    assert error["path"] == ["audiences"]
    # SQL's error (passthrough.list_audiences holds the page size), so it carries its SQLSTATE
    assert error["extensions"] == {"classification": "DataFetchingException", "code": "INVALID_ARGUMENT",
                                   "sqlstate": "PT010"}


@pytest.mark.parametrize("cursor", ["seg_a", "", "!!!", encode_cursor("x")[:-3]])
def test_after_must_be_a_cursor_we_issued(gql, cursor):
    _, (error,) = gql.errors("query($a: String) { audiences(after: $a) { edges { cursor } } }", {"a": cursor})
    assert error["message"] == "after must be an endCursor or cursor this server returned"
    assert error["extensions"]["code"] == "INVALID_ARGUMENT"


# --------------------------------------------------------------------------- limits


def test_subset_of_1000_inline_works_and_1001_is_refused(populated, gql):
    subset = [f"s{i}" for i in range(999)] + ["seg_c"]
    assert names(gql.ok(js_query("u1", subset))) == ["seg_c"]
    _, (error,) = gql.errors(SDK_QUERY, {"userId": "u1", "audiences": [*subset, "seg_a"]})
    assert error["message"] == "subset may name at most 1000 audiences, got 1001"
    assert error["extensions"] == {"classification": "DataFetchingException", "code": "INVALID_ARGUMENT", "sqlstate": "PT010"}


def test_too_many_tokens(gql):
    _, (error,) = gql.errors(js_query("u1", [f"s{i}" for i in range(2500)]))
    assert error["message"] == "the query is too long: more than 2000 tokens"
    assert error["extensions"] == {"classification": "ValidationError", "code": "QUERY_TOO_LARGE"}


def test_depth_limit(gql):
    def nested(levels: int) -> str:
        return "{ __schema { types { fields { type " + "{ ofType " * (levels - 4) + "{ name }" + " }" * (levels - 4) + " } } } }"

    assert gql.ok(nested(14))  # 15 deep including the name leaf
    _, (error,) = gql.errors(nested(15))
    assert error["message"] == "the query is nested 16 fields deep; the limit is 15"
    assert error["extensions"] == {"classification": "ValidationError", "code": "QUERY_TOO_DEEP"}


def test_graphiql_introspection_fits_the_limits(gql):
    from graphql import get_introspection_query

    data = gql.ok(get_introspection_query(descriptions=True, input_value_deprecation=True))
    assert data["__schema"]["queryType"]["name"] == "Query"


def test_alias_limit(gql):
    ok = " ".join(f"a{i}: __typename" for i in range(15))
    assert gql.ok(f"{{ {ok} }}")["a14"] == "Query"
    _, (error,) = gql.errors(f"{{ {ok} a15: __typename }}")
    assert error["message"] == "the query uses 16 aliases; the limit is 15"
    assert error["extensions"] == {"classification": "ValidationError", "code": "TOO_MANY_ALIASES"}


def test_field_limit_counts_fragments_expanded(gql):
    ten = " ".join(["__typename"] * 10)
    fragments = f"fragment A on Query {{ {ten} }} fragment B on Query {{ {' '.join(['...A'] * 10)} }}"
    assert gql.ok(f"{{ ...B ...B ...B ...B ...B }} {fragments}") == {"__typename": "Query"}  # 500 fields
    _, (error,) = gql.errors(f"{{ ...B ...B ...B ...B ...B __typename }} {fragments}")
    assert error["message"] == "the query selects 501 fields (fragments expanded); the limit is 500"
    assert error["extensions"] == {"classification": "ValidationError", "code": "TOO_MANY_FIELDS"}


def test_fragment_cycles_are_reported_by_validation(gql):
    _, errors = gql.errors("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }")
    assert any("Cannot spread fragment" in e["message"] for e in errors)


def test_parse_and_validation_are_cached_per_query_text(populated, gql):
    gql.ok(SDK_QUERY, {"userId": "u1", "audiences": ["seg_a"]})
    state = gql.facade._state
    prepared = state.cache[SDK_QUERY]
    assert names(gql.ok(SDK_QUERY, {"userId": "u2", "audiences": None})) == ["seg_a"]
    assert state.cache[SDK_QUERY] is prepared  # reused, not parsed again
    bad = "{ nope }"
    gql.errors(bad)
    assert state.cache[bad].errors and state.cache[bad].document is None  # refusals are cached too
    long_query = "{ __typename }" + " " * gql.facade.limits.max_cached_query_chars
    gql.ok(long_query)
    assert long_query not in state.cache  # one-offs such as the JavaScript form with a long subset


# --------------------------------------------------------------------------- auth


def test_api_keys(db, gql, keys):
    query = "{ audiences { edges { cursor } } }"
    assert gql.post(query).status_code == 200  # a public key may read
    assert gql.post(query, key=keys["private"]).status_code == 200
    for key, code in ((None, "MISSING_API_KEY"), ("", "MISSING_API_KEY"), ("pt_public_" + "0" * 64, "INVALID_API_KEY")):
        response = gql.post(query, key=key)
        assert response.status_code == 401, response.text
        (error,) = response.json()["errors"]
        assert_error_shape(error)
        assert error["extensions"] == {"classification": "RequestError", "code": code}
    revoked = create_key(db, "revoked", "public")
    assert gql.post(query, key=revoked).status_code == 200
    db.execute("SELECT passthrough.revoke_api_key('revoked')")
    assert gql.post(query, key=revoked).status_code == 401


def test_graphiql_page_loads_without_a_key(app_client):
    response = app_client.get("/v3/graphql")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<title>Passthrough GraphiQL</title>" in page
    assert "unpkg.com" not in page and "https://" not in page  # nothing from a CDN: tests/test_graphiql.py
    assert ('<script src="/v3/graphql/assets/graphiql-3.8.3/graphiql.min.js" integrity="sha384-HbRVEFG0JGJZeAHCJ9Xm2'
            '+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie"></script>') in page
    assert "shouldPersistHeaders: false" in page
    assert "GraphiQL.createFetcher" in page and "x-api-key" in page
    assert app_client.put("/v3/graphql").status_code == 405


def test_database_unavailable_is_503_with_retry_after(module_db_url):
    missing = module_db_url.rsplit("/", 1)[0] + "/no_such_database"
    config = ApiConfig(pool_min_size=0, pool_max_size=1, pool_timeout=0.3)
    with TestClient(create_app(missing, config=config)) as client:
        response = client.post("/v3/graphql", json={"query": "{ __typename }"}, headers={"x-api-key": "k"})
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    (error,) = response.json()["errors"]
    assert_error_shape(error)
    assert error["extensions"] == {"classification": "RequestError", "code": "DATABASE_UNAVAILABLE"}


# --------------------------------------------------------------------------- schema follows the identifier types


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_schema_is_rebuilt_when_identifier_types_change_without_restart(conn, own_app):
    gql = own_app
    populated = conn
    populated.execute("SELECT passthrough.enable()")
    populated.execute("SELECT passthrough.put_audience('seg_a', 'ext-seg_a'), passthrough.put_audience('seg_b', 'ext-seg_b')")
    qualify(populated, "fs_user_id", "u1", "ext-seg_a")
    loyalty = '{ customer(loyalty_id: "L1") { audiences { edges { node { name } } } } }'
    _, (error,) = gql.errors(loyalty)
    assert error["message"] == "Unknown argument 'loyalty_id' on field 'Query.customer'."

    populated.execute("SELECT passthrough.add_identifier_type('loyalty_id')")
    qualify(populated, "loyalty_id", "L1", "ext-seg_b")
    wait_for(lambda: "errors" not in gql.post(loyalty).json())
    assert names(gql.ok(loyalty)) == ["seg_b"]
    assert gql.facade.identifier_types == ("customer_id", "email", "fs_user_id", "loyalty_id", "vuid")

    populated.execute("SELECT passthrough.remove_identifier_type('customer_id')")  # removed: argument gone
    wait_for(lambda: "customer_id" not in gql.facade.identifier_types)
    _, (error,) = gql.errors('{ customer(customer_id: "c1") { audiences { edges { node { name } } } } }')
    assert error["message"].startswith("Unknown argument 'customer_id' on field 'Query.customer'.")
    assert names(gql.ok(js_query("u1", ["seg_a"]))) == ["seg_a"]  # the rest is untouched


def test_a_lost_listener_connection_reconnects_and_misses_no_change(conn, own_app):
    def listener_pids() -> list[int]:
        return [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            (LISTENER_APPLICATION_NAME,),
        ).fetchall()]

    wait_for(lambda: len(listener_pids()) == 1)
    (old,) = listener_pids()
    conn.execute("SELECT pg_terminate_backend(%s::integer)", (old,))  # Citus adds a bigint (global pid) form
    conn.execute("SELECT passthrough.add_identifier_type('member_no')")  # perhaps while nobody listens
    wait_for(lambda: "member_no" in (own_app.facade.identifier_types or ()))
    wait_for(lambda: len(listener_pids()) == 1 and listener_pids() != [old])
    conn.execute("SELECT passthrough.add_identifier_type('card_no')")  # heard by the new connection
    wait_for(lambda: "card_no" in (own_app.facade.identifier_types or ()))
    assert own_app.ok('{ customer(card_no: "c1") { audiences { edges { cursor } } } }') == {
        "customer": {"audiences": {"edges": []}}
    }
