"""Cost limits for GraphQL documents: depth, field count and alias count.

Checked once per distinct query text, right after parsing and before validation (the result is
cached with the parse). Fragments are expanded, each named fragment measured once (so a document
cannot hide cost behind fragments that spread each other many times), and a fragment cycle counts
as nothing here: validation reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

__all__ = ["GraphQLLimits", "LimitExceeded", "QueryCost", "check_limits", "measure"]


@dataclass(frozen=True)
class GraphQLLimits:
    """What one GraphQL request may ask for. The defaults leave room for GraphiQL's introspection."""

    max_body_bytes: int = 1 << 20  # the request body, JSON
    max_tokens: int = 2000  # lexical tokens in the query (an inline subset of 1000 names is ~1030)
    max_depth: int = 15  # nesting of field selections; graphql-core's introspection query is 15 deep
    max_fields: int = 500  # field selections once fragments are expanded
    max_aliases: int = 15  # aliased fields once fragments are expanded
    max_page_size: int = 1000  # audiences(first:)
    default_page_size: int = 100  # audiences() without first
    cache_entries: int = 1024  # parsed and validated query texts kept per schema
    max_cached_query_chars: int = 16384  # longer texts are not cached (they are one-offs)


@dataclass(frozen=True)
class QueryCost:
    depth: int
    fields: int
    aliases: int


@dataclass(frozen=True)
class LimitExceeded:
    code: str
    message: str


def measure(document: DocumentNode) -> QueryCost:
    """Depth, fields and aliases of the costliest operation in the document."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    memo: dict[str, QueryCost] = {}
    visiting: set[str] = set()

    def selection_set(node: SelectionSetNode | None) -> QueryCost:
        if node is None:
            return QueryCost(0, 0, 0)
        depth = fields = aliases = 0
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                inner = selection_set(selection.selection_set)
                depth = max(depth, inner.depth + 1)
                fields += inner.fields + 1
                aliases += inner.aliases + (1 if selection.alias is not None else 0)
            else:
                if isinstance(selection, InlineFragmentNode):
                    inner = selection_set(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    inner = fragment(selection.name.value)
                else:  # pragma: no cover - graphql-core has no other selection kind
                    continue
                depth = max(depth, inner.depth)
                fields += inner.fields
                aliases += inner.aliases
        return QueryCost(depth, fields, aliases)

    def fragment(name: str) -> QueryCost:
        if name in memo:
            return memo[name]
        definition = fragments.get(name)
        if definition is None or name in visiting:  # unknown or cyclic: validation reports it
            return QueryCost(0, 0, 0)
        visiting.add(name)
        cost = selection_set(definition.selection_set)
        visiting.discard(name)
        memo[name] = cost
        return cost

    worst = QueryCost(0, 0, 0)
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            cost = selection_set(definition.selection_set)
            worst = QueryCost(
                max(worst.depth, cost.depth), max(worst.fields, cost.fields), max(worst.aliases, cost.aliases)
            )
    return worst


def check_limits(document: DocumentNode, limits: GraphQLLimits) -> LimitExceeded | None:
    cost = measure(document)
    if cost.depth > limits.max_depth:
        return LimitExceeded(
            "QUERY_TOO_DEEP", f"the query is nested {cost.depth} fields deep; the limit is {limits.max_depth}"
        )
    if cost.aliases > limits.max_aliases:
        return LimitExceeded(
            "TOO_MANY_ALIASES", f"the query uses {cost.aliases} aliases; the limit is {limits.max_aliases}"
        )
    if cost.fields > limits.max_fields:
        return LimitExceeded(
            "TOO_MANY_FIELDS",
            f"the query selects {cost.fields} fields (fragments expanded); the limit is {limits.max_fields}",
        )
    return None
