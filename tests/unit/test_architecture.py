"""The shape of the package: no import cycles, modules of a readable size.

The layer contracts (which package may import which) live in pyproject.toml and run as
`lint-imports` in `make test`; this module checks what import-linter does not: that no
two modules of supervisor/ import each other, even indirectly, counting the imports under
TYPE_CHECKING (which is how a reader meets them).
"""

from __future__ import annotations

from pathlib import Path

import grimp

PACKAGE = Path(__file__).parents[2] / "supervisor"
MAX_LINES = 500


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan, iterative)."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = [t for t in edges[node] if t in edges]
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
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
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_no_module_imports_itself_through_others() -> None:
    """No import cycle anywhere in supervisor/, TYPE_CHECKING imports included."""
    graph = grimp.build_graph("supervisor", cache_dir=None)
    assert len(graph.modules) > 60  # every package is a real package (an __init__.py)
    assert cycles(graph) == []


def test_every_package_directory_is_a_package() -> None:
    """A directory without __init__.py is a namespace package, invisible to the checks."""
    missing = [
        str(d.relative_to(PACKAGE))
        for d in PACKAGE.rglob("*")
        if d.is_dir()
        and d.name != "__pycache__"
        and any(d.glob("*.py"))
        and not (d / "__init__.py").exists()
    ]
    assert missing == []


def test_no_module_is_over_500_lines() -> None:
    """Split by responsibility before a module reaches 500 lines."""
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
