"""The import graph between fsd's rooms (its subpackages and top-level modules) has no cycle,
and no entry point imports another: only the pipeline and the CLI compose them.

Read from the source (AST), so lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fsd

PACKAGE = Path(fsd.__file__).resolve().parent
# The two places allowed to compose entry points.
COMPOSERS = {"fsd.cli", "fsd.entrypoints.pipeline"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every fsd module ``path`` imports (``from fsd.x import y`` counts fsd.x and fsd.x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fsd")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("fsd"):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def module_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    # the package's own __init__ (``from fsd import x``) is no room of its own
    return {name: {m for m in _imports(path) if m in modules and m not in (name, "fsd")}
            for name, path in modules.items()}


def room(module: str) -> str:
    """fsd.tracking.runs -> tracking; fsd.config -> config."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def room_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for mod, deps in module_graph().items():
        graph.setdefault(room(mod), set()).update(room(d) for d in deps if room(d) != room(mod))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as a path (first node repeated at the end), [] when none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_the_rooms_of_fsd_import_each_other_without_a_cycle():
    cycle = find_cycle(room_graph())
    assert not cycle, "import cycle between rooms: " + " -> ".join(cycle)


def test_no_module_cycle():
    cycle = find_cycle(module_graph())
    assert not cycle, "import cycle between modules: " + " -> ".join(cycle)


def test_entry_points_do_not_import_each_other():
    graph = module_graph()
    shared = {"fsd.entrypoints", "fsd.entrypoints.flags"}  # argparse helpers, not a step
    borrowed = {(mod, dep) for mod, deps in graph.items()
                if mod.startswith("fsd.entrypoints.") and mod not in COMPOSERS
                for dep in deps if dep.startswith("fsd.entrypoints.") and dep not in shared}
    assert not borrowed, f"entry points importing each other: {sorted(borrowed)}"


if __name__ == "__main__":  # print the graph: python tests/test_layers.py
    for name, deps in sorted(room_graph().items()):
        print(f"{name:12s} -> {', '.join(sorted(deps)) or '-'}")
    print("room cycle:", " -> ".join(find_cycle(room_graph())) or "none")
    print("module cycle:", " -> ".join(find_cycle(module_graph())) or "none")
