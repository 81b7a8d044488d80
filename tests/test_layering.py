"""The package's layers only look down, and no two modules import each other, directly or around a
circle. Every import counts: top-level, inside functions (lazy) and under TYPE_CHECKING, because a
lazy import is still a dependency a reader has to hold in mind.

Layers, lowest first (docs/README.md's code map): a module may import from its own layer or below.
parametrization and data sit at the bottom because the models tag their parameters with their muP
roles at construction (parametrization imports nothing of probformer)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "probformer"
LAYERS: tuple[tuple[str, ...], ...] = (
    ("probformer.parametrization", "probformer.figures", "probformer.data"),
    ("probformer.models", "probformer"),  # the package root only registers the model families with HF
    ("probformer.config", "probformer.configs"),  # configs: the bundled preset YAML files
    ("probformer.sizing",),
    ("probformer.training",),
    ("probformer.experiments", "probformer.inspection"),
    ("probformer.cli", "probformer.__main__"),
)
ROOT_MODULES = {"__init__.py", "__main__.py", "config.py", "parametrization.py", "figures.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(target: str) -> str:
    """The most specific module of ``target`` (``probformer.experiments.noise`` from an import of the
    package's submodule, the package itself for a name defined in its ``__init__``)."""
    while target not in MODULES:
        target = target.rpartition(".")[0]
    return target


def imports_of(name: str) -> set[str]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "probformer"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "probformer":
                continue
            for alias in node.names:  # `from probformer.experiments import noise` names a submodule
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {resolve(t) for t in found} - {name}


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> int:
    best = None
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            covers = name == prefix or (name.startswith(prefix + ".") and prefix != "probformer")
            if covers and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    if best is None:
        raise AssertionError(f"{name} belongs to no layer; add it to LAYERS in {Path(__file__).name}")
    return best[0]


def test_every_module_has_a_layer_and_the_root_holds_only_the_core_modules():
    for name in MODULES:
        layer_of(name)
    assert {p.name for p in PACKAGE.glob("*.py")} == ROOT_MODULES


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_only_look_down(name):
    upward = sorted(t for t in GRAPH[name] if layer_of(t) > layer_of(name))
    assert not upward, f"{name} (layer {layer_of(name)}) imports from a higher layer: {upward}"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module are the import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_no_import_circles():
    assert strongly_connected(GRAPH) == []


def test_the_checks_catch_what_they_are_for():
    """The circle finder and the layer rule on a made-up graph and names (so an empty result above means
    something)."""
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("probformer.cli.main") > layer_of("probformer.training.trainer") > layer_of("probformer.models")
    assert layer_of("probformer") == layer_of("probformer.models.registry")
    assert "probformer.data.errors" in GRAPH["probformer.data.conllu"]


def test_the_inspection_library_imports_only_models_and_data():
    import ast

    import probformer.inspection as package

    allowed = ("probformer.models", "probformer.data", "probformer.inspection", "probformer.figures")
    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("probformer"):
                assert node.module.startswith(allowed), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("probformer") or alias.name.startswith(allowed), path.name
