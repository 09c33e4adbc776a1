"""The layout of pyapp/ (docs/architecture.md's folder map): no module imports one that imports it back, directly
or through others, no hand-written module grows past 400 lines, and no module docstring runs past 15 lines (issue
18: what a reader needs, the rest in the functions' docstrings).

Read from the source with ``ast``, nothing imported: every import statement counts, the ones inside functions
(deferred to save start-up time) included, since deferring an import hides a circle without removing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pyapp"
MAX_LINES = 400
MAX_DOCSTRING_LINES = 15
# Generated or vendored .py files under pyapp/, which the line limit does not apply to (none today).
NOT_HAND_WRITTEN: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """The pyapp modules ``name``'s import statements name: ``from pkg import sub`` names the submodule when
    there is one, else the package (an attribute of its __init__)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in MODULES else source)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_and_only_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_import_reader_sees_deferred_relative_and_submodule_imports():
    assert "pyapp.cli.common" in GRAPH["pyapp.cli.keys"]  # from pyapp.cli.common import ...
    assert "pyapp.web.graphql.endpoint" in GRAPH["pyapp.web.app"]
    assert "pyapp.web.app" in GRAPH["pyapp.web"]  # deferred, inside __getattr__
    assert "pyapp.web" in GRAPH["pyapp.serving"]  # from pyapp.web import ApiConfig: the package's attribute


def test_no_module_imports_one_that_imports_it_back():
    assert len(GRAPH) > 50
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_hand_written_module_is_longer_than_400_lines(name):
    path = MODULES[name]
    if str(path.relative_to(ROOT)) in NOT_HAND_WRITTEN:
        pytest.skip("generated or vendored")
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by job"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_docstring_is_longer_than_15_lines(name):
    path = MODULES[name]
    docstring = ast.get_docstring(ast.parse(path.read_text(), filename=str(path)), clean=False) or ""
    lines = len(docstring.splitlines())
    assert lines <= MAX_DOCSTRING_LINES, (
        f"{path.relative_to(ROOT)}'s docstring has {lines} lines: say what the module does and why, and leave "
        "the rest to its functions' docstrings"
    )
