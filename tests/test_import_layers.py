"""The package's import contract, read from the source (every import statement, also those inside
functions): layers import only downwards, sibling packages of one layer not each other, nothing
imports the ``hrnet_fast`` facade, and the module graph has no cycle.

    cli -> bench -> pose | seg -> arguments -> models -> nn -> ops -> kernels | _ext
        -> layout | testing | _lazy | extras | progress

(``kernels/`` is installed as ``hrnet_fast.kernels``.) A new module must belong to a layer: add its
package to ``LAYERS`` here where the design puts it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "hrnet_fast"
SOURCES = {PACKAGE: ROOT / "hrnet_fast", f"{PACKAGE}.kernels": ROOT / "kernels"}
LAYERS = [  # top first; packages in one layer are independent of each other
    ["cli"],
    ["bench"],  # the harness times the apps end to end (seg)
    ["pose", "seg"],
    ["arguments"],  # the subcommands' argparse types: they check names against models and ops
    ["models"],
    ["nn"],
    ["ops"],
    ["kernels", "_ext"],
    ["layout", "testing", "_lazy", "extras", "progress"],  # leaves: import nothing of the package
]


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """The package's modules that ``module`` imports."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = module.split(".")
            base = parts[: len(parts) - node.level + (1 if is_package else 0)] if node.level else []
            base = ".".join([*base, *([node.module] if node.module else [])])
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `import a.b.c` of an attribute: its module
                name = name.rpartition(".")[0]
            if name.startswith(PACKAGE) and name != module:
                targets.add(name)
    return targets


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _place(module: str) -> tuple[int, str] | None:
    """(layer index, package) of a module; None for the facade ``hrnet_fast`` itself."""
    for index, packages in enumerate(LAYERS):
        for package in packages:
            name = f"{PACKAGE}.{package}"
            if module == name or module.startswith(name + "."):
                return index, package
    return None


def test_every_module_belongs_to_a_layer():
    assert [m for m in MODULES if m != PACKAGE and _place(m) is None] == []


def test_layers_import_only_downwards_and_nothing_imports_the_facade():
    violations = []
    for module, targets in GRAPH.items():
        if module == PACKAGE:
            continue
        (layer, package) = _place(module)
        for target in targets:
            if target == PACKAGE:
                violations.append(f"{module} imports the facade {PACKAGE} (import the module instead)")
                continue
            target_layer, target_package = _place(target)
            if target_layer < layer or (target_layer == layer and target_package != package):
                violations.append(f"{module} ({package}) imports {target} ({target_package})")
    assert violations == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_module_graph_has_no_cycle():
    assert _cycles(GRAPH) == []


def test_the_contract_checker_sees_cycles_and_upward_imports():
    """The checker itself: a cycle and the modules' real upward edges would be caught."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert f"{PACKAGE}.ops.registry" in GRAPH[f"{PACKAGE}.ops.upsample_sum_op"]
    assert f"{PACKAGE}.layout" in GRAPH[f"{PACKAGE}.kernels.upsample_sum"]
    assert _place(f"{PACKAGE}.nn.fusion")[0] < _place(f"{PACKAGE}.ops.registry")[0]
