"""The house's layering as a test: the rooms of fsd (its subpackages and top-level modules)
in a declared order, each importing only rooms of earlier layers (so no cycle); no entry point
imports another (only the pipeline and the CLI compose them); only the MLflow edges import
mlflow; no module over 600 lines. docs/architecture.md draws the same order.

Read from the source (AST), so lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fsd

PACKAGE = Path(fsd.__file__).resolve().parent
# The two places allowed to compose entry points.
COMPOSERS = {"fsd.cli", "fsd.entrypoints.pipeline"}
# The rooms bottom up: a room imports only rooms of earlier layers (never one of its own
# layer). The stages in pipeline order, then scoring and its consumers, then the edges.
LAYERS: list[tuple[str, ...]] = [
    ("config", "progress", "locks", "processes", "boundedjson"),  # what every stage may use
    ("data",),  # datasets, audio decoding
    ("folds",),  # which fold each clip belongs to
    ("features",),  # log-mel, summary features, the store (its folds assigned at featurize)
    ("model",),  # the networks, batched TTA
    ("evaluation",),  # metrics, out-of-fold scoring, the blend arithmetic
    ("train",),  # a fold's fit, its folder (FoldDir), the experiment's (ExperimentDir)
    ("baseline",),  # scikit-learn models on the summary features
    ("ensemble",),  # the bundle, the stage: assemble, score, blend, submit
    ("distill",),  # a log-mel student of the ensemble: targets, its training, its bundle
    ("inference",),  # one scoring path: bytes -> features -> an ensemble's top-k
    ("export",),  # the portable export and its predictor
    ("tracking",),  # the MLflow edge: tags, runs, lookups, descriptions
    ("serving",),  # HTTP and the MLflow pyfunc/registry
    ("sweep",),  # the Optuna study
    ("cluster",),  # where steps run (Ray)
    ("entrypoints",),  # one per command; pipeline composes them
    ("cli",),
    ("__main__",),
]
# The only modules (or packages, ending in '.') that may import mlflow.
MLFLOW_EDGES = ("fsd.tracking.", "fsd.entrypoints.", "fsd.cluster.", "fsd.serving.pyfunc",
                "fsd.serving.registry", "fsd.serving.ensemble_model")
MAX_LINES = 600


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


def layer_of(room_name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if room_name in layer:
            return i
    raise AssertionError(f"room {room_name!r} is in no layer of LAYERS: add it where it belongs")


def test_every_room_imports_only_earlier_layers():
    upward = sorted(f"{mod} -> {dep}" for mod, deps in module_graph().items()
                    for dep in deps if room(dep) != room(mod)
                    and layer_of(room(dep)) >= layer_of(room(mod)))
    assert not upward, "imports against the layer order (LAYERS):\n" + "\n".join(upward)


def test_the_layers_name_every_room_once():
    named = [r for layer in LAYERS for r in layer]
    assert len(named) == len(set(named))
    assert {room(m) for m in module_graph()} - {"fsd"} <= set(named)


def _imports_mlflow(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "mlflow"
                                                for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow":
            return True
    return False


def test_only_the_mlflow_edges_import_mlflow():
    outside = sorted(name for name, path in
                     ((_module_name(p), p) for p in PACKAGE.rglob("*.py"))
                     if _imports_mlflow(path) and not any(
                         name == e or (e.endswith(".") and name.startswith(e))
                         for e in MLFLOW_EDGES))
    assert not outside, f"modules importing mlflow outside {MLFLOW_EDGES}: {outside}"


def test_no_module_is_over_the_line_cap():
    long = sorted(f"{p.relative_to(PACKAGE.parent)}: {n}" for p in PACKAGE.rglob("*.py")
                  if (n := len(p.read_text().splitlines())) > MAX_LINES)
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_architecture_doc_draws_the_same_order():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    line = next(x for x in doc.splitlines() if x.startswith("Layers, bottom up:"))
    drawn = [tuple(r.strip() for r in part.split(",")) for part in
             line.split(":", 1)[1].strip().rstrip(".").split(" -> ")]
    assert drawn == [tuple(sorted(layer)) for layer in LAYERS if layer != ("__main__",)]


if __name__ == "__main__":  # print the graph: python tests/unit/test_layers.py
    for name, deps in sorted(room_graph().items()):
        print(f"{name:12s} -> {', '.join(sorted(deps)) or '-'}")
    print("room cycle:", " -> ".join(find_cycle(room_graph())) or "none")
    print("module cycle:", " -> ".join(find_cycle(module_graph())) or "none")
