"""The package's layering (docs/layout.md): no import cycle, no import from a higher layer, and
no private name imported from another module. Read from the source with `ast`, so imports inside
functions count as well."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "unlearn_guard"
LAYOUT = Path(__file__).resolve().parents[1] / "docs" / "layout.md"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("unlearn_guard", *path.relative_to(PACKAGE).with_suffix("").parts))
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(target module, imported names, line) for every import of our own package in `module`."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "unlearn_guard"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").split(".")[0] == "unlearn_guard":
                target = node.module
            else:
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            found += [(s, [], node.lineno) for s in submodules]
            rest = [n for n in names if f"{target}.{n}" not in MODULES]
            if rest:
                found.append((target, rest, node.lineno))
    return found


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for target, _, _ in _imports(module, path):
            if target in MODULES and target != module:
                edges[module].add(target)
    return edges


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layers() -> dict[str, int]:
    layers = {}
    for line in LAYOUT.read_text().splitlines():
        match = re.match(r"^\| (\d+) \| ([a-z_, ]+) \|", line)
        if match:
            for room in match.group(2).split(","):
                layers[room.strip()] = int(match.group(1))
    return layers


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan).

    A package's `__init__` that re-exports its own submodules, which do not import it back, is
    not a cycle of design: those edges are left out."""
    def kept(a: str, b: str) -> bool:
        return not (MODULES[a].name == "__init__.py" and b.startswith(a + ".") and a not in edges.get(b, ()))

    graph = {m: [t for t in edges.get(m, ()) if kept(m, t)] for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_the_layout_names_a_layer_for_every_room():
    layers = _layers()
    rooms = {_room(m) for m in MODULES} - {""}
    assert not rooms - set(layers), f"rooms without a layer in docs/layout.md: {sorted(rooms - set(layers))}"
    assert not set(layers) - rooms, f"docs/layout.md names rooms that do not exist: {sorted(set(layers) - rooms)}"


def test_no_import_cycle_inside_the_package():
    assert _cycles(_edges()) == []


def test_the_cycle_finder_sees_a_cycle():
    # Negative control: two modules that import each other must be found.
    edges = _edges()
    edges["unlearn_guard.errors"] = set(edges.get("unlearn_guard.errors", ())) | {"unlearn_guard.validation"}
    assert ["unlearn_guard.errors", "unlearn_guard.validation"] in _cycles(edges)


def test_no_room_imports_from_a_higher_layer():
    layers = _layers()
    upward = []
    for module, path in MODULES.items():
        if module == "unlearn_guard":
            continue  # the public API re-exports every layer
        for target, _, line in _imports(module, path):
            here, there = _room(module), _room(target)
            if there and here != there and layers[there] > layers[here]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here}, layer {layers[here]}) "
                              f"imports {target} ({there}, layer {layers[there]})")
    assert upward == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_is_imported_from_another_module(module):
    private = [f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: {name} from {target}"
               for target, names, line in _imports(module, MODULES[module])
               for name in names if name.startswith("_") and not name.startswith("__") and target != module]
    assert private == []


def _module_level_imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) of every import outside a function body (what importing the file runs)."""
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.append(("." * child.level + (child.module or ""), child.lineno))
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def test_torchmetrics_is_imported_only_where_the_metric_is_used():
    """torchmetrics costs about 1.3 s of CPU at start-up (each CLI run, each test subprocess): only
    stats/metric.py imports it, and nothing imports that module at load time (`unlearn_guard.stats`
    hands out `MemoryDistance` on first use)."""
    eager = []
    for module, path in MODULES.items():
        for target, line in _module_level_imports(path):
            if module != "unlearn_guard.stats.metric" and target.split(".")[0] == "torchmetrics":
                eager.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
            if target in (".metric", "unlearn_guard.stats.metric") or target.endswith("stats.metric"):
                eager.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} at load time")
    assert eager == []
    assert any(t == "torchmetrics" for t, _ in _module_level_imports(MODULES["unlearn_guard.stats.metric"]))
