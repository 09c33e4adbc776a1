"""Compiled GraphQL: the SDKs' customer query answered without graphql-core's executor.

The Optimizely SDKs ask one thing: ``customer(<identifier type>: ...) { audiences(subset: ...) { edges { node
{ name state } } } }``, with variables (Python, Go, Java, Swift) or with literals (JavaScript). When a parsed
and validated document (pyapp/web/graphql/, ``Prepared``) has that shape, ``compile_plan`` turns it once
into a ``Plan``: the one SQL call of ``Customer.audiences`` (CUSTOMER_SQL, the statement the resolver runs)
and the shape of the answer, aliases and field order included. The endpoint (``run_plan``) makes the call and
builds the same ``data`` the executor would, without walking the document or calling a resolver per field. The
JavaScript SDK's text differs for every visitor (the literals), so ``literal_plan`` reads that one form from the
text itself, without parsing or validating it.

Anything else falls back to the executor: another shape (fragments, directives, other fields, ``at``,
``cursor``, ``pageInfo``), a variable whose value the executor would refuse or coerce, and any error: the
general path then answers it, so errors stay the executor's, byte for byte. tests/test_graphql.py runs every
test through both paths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    ListValueNode,
    OperationDefinitionNode,
    OperationType,
    StringValueNode,
    VariableNode,
    print_ast,
)

# The JavaScript SDK's query, literals inline (../shared/reference/odp-wire.md); a GraphQL string literal is
# "..." with the escapes of JSON (\u{...} aside, which sends the text to the parser)
_STRING = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9A-Fa-f]{4})*"'
JS_SDK_QUERY = re.compile(
    r'query \{customer\(([_A-Za-z][_0-9A-Za-z]*) : (' + _STRING + r')\) '
    r'\{audiences\(subset: \[((?:' + _STRING + r'(?:,' + _STRING + r')*)?)\]\) \{edges \{node \{name state\}\}\}\}\}')
JS_SUBSET_ITEM = re.compile(_STRING)
JS_MAX_SUBSET = 500  # well within GraphQLLimits.max_tokens: a longer list goes to the parser, which counts
# The columns of the customer statement's rows, by the GraphQL name of the Audience field each answers
NODE_COLUMNS = {"name": 0, "state": 1, "description": 2, "is_ready": 3, "revision": 4, "size": 5}
FALLBACK = None  # what Plan.arguments returns when the executor must answer


@dataclass(frozen=True)
class Value:
    """An argument: a literal, or a variable's name."""

    literal: Any = None
    variable: str | None = None

    def resolve(self, variables: dict[str, Any] | None) -> tuple[bool, Any]:
        """(known, value): unknown when the variable was not sent (the executor decides what that means)."""
        if self.variable is None:
            return True, self.literal
        if variables is None or self.variable not in variables:
            return False, None
        return True, variables[self.variable]


@dataclass(frozen=True)
class Plan:
    operation_name: str | None
    identifier_type: str
    identifier: Value
    subset: Value | None
    # the answer's keys, outermost first: customer, audiences, edges, node; then (key, column) per node field
    keys: tuple[str, str, str, str]
    node_fields: tuple[tuple[str, int], ...]

    def arguments(self, variables: dict[str, Any] | None, operation_name: str | None) -> tuple | None:
        """(identifier type, identifier, subset) for CUSTOMER_SQL, or None when the executor must answer."""
        if operation_name is not None and operation_name != self.operation_name:
            return FALLBACK
        known, identifier = self.identifier.resolve(variables)
        if not known or not isinstance(identifier, str):  # a null or missing identifier is the executor's error
            return FALLBACK
        subset = None
        if self.subset is not None:
            known, subset = self.subset.resolve(variables)
            if not known:
                subset = None  # an unset subset: every audience, as the resolver reads UNSET
            elif subset is not None and not (isinstance(subset, list) and all(
                    s is None or isinstance(s, str) for s in subset)):
                return FALLBACK  # the executor coerces (a lone string) or refuses it
        return self.identifier_type, identifier, subset

    def data(self, rows: Sequence[tuple]) -> dict[str, Any]:
        customer, audiences, edges, node = self.keys
        return {customer: {audiences: {edges: [
            {node: {key: row[column] for key, column in self.node_fields}} for row in rows]}}}


def literal_plan(query: str, identifier_types: Sequence[str]) -> Plan | None:
    """The plan of the JavaScript SDK's query, read from its text without parsing it (a new text per
    visitor: parsing and validating it, about 3 ms a text with graphql-core, would cost more than answering),
    else None."""
    match = JS_SDK_QUERY.fullmatch(query)
    if match is None or match.group(1) not in identifier_types:
        return None
    names = JS_SUBSET_ITEM.findall(match.group(3))
    if len(names) > JS_MAX_SUBSET:
        return None
    try:
        identifier, subset = json.loads(match.group(2)), [json.loads(n) for n in names]
        for text in (identifier, *subset):
            text.encode("utf-8")  # a lone surrogate (\ud800) is the parser's to refuse
    except (ValueError, UnicodeEncodeError):
        return None
    return Plan(None, match.group(1), Value(literal=identifier), Value(literal=subset),
                ("customer", "audiences", "edges", "node"), (("name", 0), ("state", 1)))


def compile_plan(document: DocumentNode, identifier_types: Sequence[str]) -> Plan | None:
    """The plan of a validated document that has the SDKs' shape, else None."""
    if len(document.definitions) != 1:
        return None
    operation = document.definitions[0]
    if not isinstance(operation, OperationDefinitionNode) or operation.operation != OperationType.QUERY:
        return None
    if operation.directives or any(v.default_value is not None or v.directives
                                   for v in operation.variable_definitions or ()):
        return None
    # a variable's value is taken as sent: only for the nullable types the SDKs declare, which take it as is
    declared = {v.variable.name.value: print_ast(v.type) for v in operation.variable_definitions or ()}
    customer = _only_field(operation.selection_set, "customer")
    if customer is None or len(customer.arguments or ()) != 1:
        return None
    argument = customer.arguments[0]
    if argument.name.value not in identifier_types:
        return None
    identifier = _value(argument.value, list_allowed=False)
    audiences = _only_field(customer.selection_set, "audiences")
    if identifier is None or audiences is None or declared.get(identifier.variable, "String") != "String":
        return None
    subset = None
    for arg in audiences.arguments or ():
        if arg.name.value != "subset":  # at: a past instant, the executor's
            return None
        subset = _value(arg.value, list_allowed=True)
        if subset is None or declared.get(subset.variable, "[String]") != "[String]":
            return None
    edges = _only_field(audiences.selection_set, "edges")
    node = _only_field(edges.selection_set, "node") if edges is not None else None
    if node is None or node.selection_set is None:
        return None
    node_fields = []
    for selection in node.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives or selection.arguments:
            return None
        column = NODE_COLUMNS.get(selection.name.value)
        if column is None or selection.selection_set is not None:
            return None
        node_fields.append(((selection.alias or selection.name).value, column))
    keys = tuple((f.alias or f.name).value for f in (customer, audiences, edges, node))
    name = operation.name.value if operation.name else None
    return Plan(name, argument.name.value, identifier, subset, keys, tuple(node_fields))  # type: ignore[arg-type]


def _only_field(selection_set: Any, name: str) -> FieldNode | None:
    """The one selection of ``selection_set`` when it is the field ``name``, plainly (no directive)."""
    if selection_set is None or len(selection_set.selections) != 1:
        return None
    selection = selection_set.selections[0]
    if not isinstance(selection, FieldNode) or selection.name.value != name or selection.directives:
        return None
    return selection


def _value(node: Any, *, list_allowed: bool) -> Value | None:
    if isinstance(node, VariableNode):
        return Value(variable=node.name.value)
    if isinstance(node, StringValueNode):
        return Value(literal=[node.value] if list_allowed else node.value)  # [String] takes a lone string
    if list_allowed and isinstance(node, ListValueNode) and all(isinstance(v, StringValueNode) for v in node.values):
        return Value(literal=[v.value for v in node.values])
    return None
