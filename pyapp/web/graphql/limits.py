"""Cost limits for GraphQL documents: depth, field count, alias count and history reads.

A history read is a field that reads an audience's whole event log: ``size_history``, and
``audiences(at:)`` when ``size`` is selected below it (a size as of a past instant, one per audience of
the answer; sql/functions/230_membership_history.sql). A query may ask for few of them, whatever its aliases: 15
aliased ones against a 3.1 M-member audience took 38 s (docs/reliability.md, "Abuse").

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
    NullValueNode,
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
    max_history_reads: int = 1  # size_history, and audiences(at:) selecting size: each reads an audience's log
    cache_entries: int = 1024  # parsed and validated query texts kept per schema
    max_cached_query_chars: int = 16384  # longer texts are not cached (they are one-offs)


@dataclass(frozen=True)
class QueryCost:
    depth: int
    fields: int
    aliases: int
    history_reads: int = 0
    selects_size: bool = False  # a field called size at any depth (fragments expanded)


HISTORY_FIELDS = frozenset({"size_history"})  # a history read whatever it selects
SIZED_AT_FIELD = "audiences"  # with a non-null at: argument and size selected below, a history read


def _history_read(field: FieldNode, inner: QueryCost) -> bool:
    name = field.name.value
    if name in HISTORY_FIELDS:
        return True
    return name == SIZED_AT_FIELD and inner.selects_size and any(
        a.name.value == "at" and not isinstance(a.value, NullValueNode) for a in field.arguments or ())


@dataclass(frozen=True)
class LimitExceeded:
    code: str
    message: str


def measure(document: DocumentNode) -> QueryCost:
    """Depth, fields, aliases and history reads of the costliest operation in the document (each measured
    on its own)."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    memo: dict[str, QueryCost] = {}
    visiting: set[str] = set()

    def selection_set(node: SelectionSetNode | None) -> QueryCost:
        if node is None:
            return QueryCost(0, 0, 0)
        depth = fields = aliases = history_reads = 0
        selects_size = False
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                inner = selection_set(selection.selection_set)
                depth = max(depth, inner.depth + 1)
                fields += inner.fields + 1
                aliases += inner.aliases + (1 if selection.alias is not None else 0)
                history_reads += inner.history_reads + (1 if _history_read(selection, inner) else 0)
                selects_size = selects_size or inner.selects_size or selection.name.value == "size"
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
                history_reads += inner.history_reads
                selects_size = selects_size or inner.selects_size
        return QueryCost(depth, fields, aliases, history_reads, selects_size)

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
                max(worst.depth, cost.depth), max(worst.fields, cost.fields), max(worst.aliases, cost.aliases),
                max(worst.history_reads, cost.history_reads),
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
    if cost.history_reads > limits.max_history_reads:
        return LimitExceeded(
            "TOO_MANY_HISTORY_READS",
            f"the query reads audience histories {cost.history_reads} times (size_history, and audiences(at:) "
            f"selecting size: each reads an audience's whole event log); the limit is {limits.max_history_reads}",
        )
    if cost.fields > limits.max_fields:
        return LimitExceeded(
            "TOO_MANY_FIELDS",
            f"the query selects {cost.fields} fields (fragments expanded); the limit is {limits.max_fields}",
        )
    return None
