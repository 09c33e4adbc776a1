"""/v3/graphql and the GraphiQL page's assets."""

from __future__ import annotations

from typing import Any

from pyapp.web.openapi.parts import error, ok, operation, ref, shipped_file

PATHS: dict[str, Any] = {
    "/v3/graphql/assets/{version}/{name}": {
        "get": shipped_file(
            "graphiqlAsset",
            "A file of the GraphiQL page (React, GraphiQL and its stylesheet), shipped with the server.",
            "pyapp/web/graphql/static/graphiql", "graphiql-3.8.3", "graphiql.min.js"),
    },
    "/v3/graphql": {
        "get": operation(
            "graphiql",
            "GraphiQL, an in-browser IDE for the GraphQL facade (paste a key into its headers).",
            scope=None,
            responses={
                "200": {"description": "The GraphiQL page.", "content": {"text/html": {"schema": {"type": "string"}}}}
            },
        ),
        "post": operation(
            "graphql",
            "ODP's GraphQL membership query: "
            "customer(fs_user_id: ...) { audiences(subset: [...]) { edges { node { name state } } } }.",
            description="See pyapp/web/graphql/ for the schema. GraphQL errors (an invalid identifier, a "
            "validation error) are answered 200 with `errors`, as ODP does; each error has `message`, `locations` "
            "and `extensions.classification` and `extensions.code`.",
            scope="public",
            body="GraphQLRequest",
            error_schema="GraphQLErrors",
            responses={
                "200": ok("The result: `data`, and `errors` if any.", "GraphQLResponse"),
                "400": error("Not a GraphQL request: wrong Content-Type, malformed JSON, no `query`.", "GraphQLErrors"),
                "413": error("The body is larger than the limit.", "GraphQLErrors"),
            },
        ),
    },
}

SCHEMAS: dict[str, Any] = {
    "GraphQLRequest": {
        "type": "object",
        "required": ["query"],
        "properties": {
            "query": {"type": "string"},
            "variables": {"type": ["object", "null"]},
            "operationName": {"type": ["string", "null"]},
        },
    },
    "GraphQLError": {
        "type": "object",
        "required": ["message", "locations", "extensions"],
        "properties": {
            "message": {"type": "string"},
            "locations": {
                "type": "array",
                "items": {"type": "object", "properties": {"line": {"type": "integer"}, "column": {"type": "integer"}}},
            },
            "path": {"type": "array", "items": {"type": ["string", "integer"]}},
            "extensions": {
                "type": "object",
                "required": ["classification", "code"],
                "properties": {
                    "classification": {"type": "string", "description": "graphql-java's classification."},
                    "code": {"type": "string", "examples": ["INVALID_IDENTIFIER_EXCEPTION"]},
                },
            },
        },
    },
    "GraphQLErrors": {
        "type": "object",
        "required": ["errors"],
        "properties": {"errors": {"type": "array", "items": ref("GraphQLError")}},
    },
    "GraphQLResponse": {
        "type": "object",
        "properties": {
            "data": {"type": ["object", "null"]},
            "errors": {"type": "array", "items": ref("GraphQLError")},
        },
    },
}
