"""The import graph of stlib runs one way, down the layers below, and has no circle.

Read from the source (the AST of every module under stlib/, lazy imports inside functions
included, ``if TYPE_CHECKING:`` blocks left out), so the layout cannot drift back: a module
may import from its own layer or a lower one, never from a higher one, and no chain of
imports may come back to where it started.
"""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path


PACKAGE_DIR = Path(__file__).resolve().parents[1] / "stlib"

#: Bottom to top. A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base: names, files, config dataclasses", ("stlib.registry", "stlib.atomic", "stlib.config")),
    ("neurons", ("stlib.neurons",)),
    ("layers", ("stlib.layers",)),
    ("models", ("stlib.models",)),
    ("inputs: data, encoders, losses", ("stlib.data", "stlib.encoders", "stlib.losses")),
    ("assembly of a run: params with name checks, model/optimizer building",
     ("stlib.params", "stlib.build")),
    ("run services: record, distributed, run state, analysis",
     ("stlib.record", "stlib.distributed", "stlib.run", "stlib.errors", "stlib.analysis")),
    ("entry points: training, evaluation, sweeps, notebooks, benchmarks",
     ("stlib.train", "stlib.evaluation", "stlib.sweep", "stlib.notebooks", "stlib.bench")),
    ("the public package", ("stlib",)),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    return rank


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(module: str) -> set[str]:
    """The stlib modules ``module`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        found.update(t for t in targets if t in MODULES and t != module)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_sits_in_a_layer():
    unplaced = [m for m in MODULES if layer_of(m) is None or (m != "stlib" and layer_of(m) == len(LAYERS) - 1)]
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_no_import_runs_up():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
              for m, targets in sorted(GRAPH.items()) for t in sorted(targets)
              if layer_of(t) > layer_of(m)]
    assert not upward, "imports that run up:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert not _cycles(GRAPH), f"import circles: {_cycles(GRAPH)}"


def test_the_checker_sees_a_circle_and_an_upward_import():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert "stlib.neurons.reference" in GRAPH["stlib.neurons.registry"]  # edges are read at all
    assert layer_of("stlib.layers.attention") > layer_of("stlib.neurons.reference")
    assert layer_of("stlib.train") > layer_of("stlib.build") > layer_of("stlib.models.sdt")


def test_every_module_imports_in_a_fresh_process():
    optional = {"stlib.neurons.kernels.triton_ops": "triton"}
    modules = [m for m in MODULES
               if m not in optional or importlib.util.find_spec(optional[m]) is not None]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    # leaves first: a module imported before anything above it must import on its own
    order = sorted(modules, key=lambda m: (layer_of(m), m))
    result = subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True,
                            cwd=PACKAGE_DIR.parent, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_config_and_kernel_spec_import_nothing_above_them():
    base = {m for m in MODULES if layer_of(m) == 0}
    assert GRAPH["stlib.config"] <= base  # config dataclasses know no registry
    # the fused kernels read a neuron's declared kind; they never import the neuron classes
    assert not {t for t in GRAPH["stlib.neurons.kernels.spec"] if t.startswith("stlib.neurons.reference")}
