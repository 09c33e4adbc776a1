"""Query texts parsed, measured against ``GraphQLLimits`` and validated once per schema, kept in an LRU cache,
with the SDKs' shape compiled (plan.py)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import strawberry
from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse, validate

from pyapp.web.graphql.errors import INVALID_SYNTAX, VALIDATION_ERROR, error_json
from pyapp.web.graphql.limits import GraphQLLimits, check_limits
from pyapp.web.graphql.plan import Plan, compile_plan


@dataclass(frozen=True)
class Prepared:
    """A query text, parsed, measured and validated against one schema."""

    document: DocumentNode | None
    errors: list[dict[str, Any]]
    plan: Plan | None = None  # the SDKs' shape, compiled (plan.py)


@dataclass
class SchemaState:
    identifier_types: tuple[str, ...]
    schema: strawberry.Schema
    cache: OrderedDict[str, Prepared] = field(default_factory=OrderedDict)

    @property
    def graphql_schema(self) -> GraphQLSchema:
        return self.schema._schema

    def prepare(self, query: str, limits: GraphQLLimits) -> Prepared:
        prepared = self.cache.get(query)
        if prepared is not None:
            self.cache.move_to_end(query)
            return prepared
        prepared = prepare_document(self.graphql_schema, query, limits)
        if prepared.document is not None:
            prepared = Prepared(prepared.document, [], compile_plan(prepared.document, self.identifier_types))
        if len(query) <= limits.max_cached_query_chars:
            self.cache[query] = prepared
            if len(self.cache) > limits.cache_entries:
                self.cache.popitem(last=False)
        return prepared


def prepare_document(schema: GraphQLSchema, query: str, limits: GraphQLLimits) -> Prepared:
    try:
        document = parse(query, max_tokens=limits.max_tokens)
    except GraphQLError as exc:
        if "Document contains more than" in exc.message:  # graphql-core stopped at max_tokens
            message = f"the query is too long: more than {limits.max_tokens} tokens"
            return Prepared(None, [error_json(message, VALIDATION_ERROR, "QUERY_TOO_LARGE")])
        return Prepared(None, [error_json(exc.message, INVALID_SYNTAX, "GRAPHQL_PARSE_FAILED", locations=exc.locations or ())])
    exceeded = check_limits(document, limits)
    if exceeded is not None:
        return Prepared(None, [error_json(exceeded.message, VALIDATION_ERROR, exceeded.code)])
    problems = validate(schema, document, max_errors=20)
    if problems:
        return Prepared(
            None,
            [error_json(p.message, VALIDATION_ERROR, "GRAPHQL_VALIDATION_FAILED", locations=p.locations or ()) for p in problems],
        )
    return Prepared(document, [])
