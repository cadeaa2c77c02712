"""The package's layers (docs/architecture.md): every import points down, and no module imports itself back."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "asgcn_lightning"

# layer of each top-level module or package of asgcn_lightning: a module imports from lower layers and from
# modules of its own layer, except that data and models (layer 2) stay apart
LAYERS = {
    # 0: what every layer may use
    "__init__": 0, "runtime": 0, "errors": 0, "shutdown": 0, "atomic": 0, "progress": 0, "schemas": 0, "config": 0,
    "memory": 0,
    # 1: skeleton layouts and the graphs built on them
    "skeleton": 1,
    # 2: data (sources → store → data module) and models (AIM → blocks → heads → network → LightningModule), apart
    "data": 2, "models": 2,
    # 3: the one way to load and run a trained model
    "inference": 3,
    # 4: pictures
    "visual": 4,
    # 5: training and the command-line apps
    "apps": 5, "callbacks": 5, "throughput": 5, "resume": 5, "checkpoint_io": 5, "distributed": 5, "loggers": 5,
    "export": 5, "prepare": 5,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("asgcn_lightning", *parts)).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports (``from a.b import c`` counts ``a.b.c`` when that is a module)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("asgcn_lightning"):
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if alias.name.startswith("asgcn_lightning"))
        graph[name] = {module for module in imported if module in modules and module != name}
    return graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_top_level_module_has_a_layer():
    tops = {_top(module) for module in import_graph()}
    assert tops <= set(LAYERS), f"give these a layer in LAYERS and docs/architecture.md: {sorted(tops - set(LAYERS))}"


def _points_down(module: str, imported: str) -> bool:
    own, other = LAYERS[_top(module)], LAYERS[_top(imported)]
    return other < own or (other == own and (own != LAYERS["data"] or _top(module) == _top(imported)))


def test_imports_only_point_down_the_layers():
    upward = sorted(f"{module} → {imported}" for module, imports in import_graph().items() for imported in imports
                    if not _points_down(module, imported))
    assert not upward, "imports that do not point down the layers:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                cycles.append([*path[path.index(imported):], imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(cycle) for cycle in cycles)
