"""The floor plan holds: no import cycle inside the runtime, each layer imports only the layers below it, and no
room grows past the sizes docs/architecture.md promises (a class ≤ 250 lines, a module ≤ 400, the model's public door
≤ 200)."""

import ast
from pathlib import Path

import pytest

import s2s_runtime

ROOT = Path(s2s_runtime.__file__).parent


def modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def imports(name: str, path: Path, package: bool, known: dict) -> set[str]:
    """The runtime modules `name` imports (module level or inside functions), resolved from relative imports."""
    here = name if package else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = here.split(".")
            if node.level:
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in known and c != name and not name.startswith(c + ".")}
    return found


GRAPH = {name: imports(name, path, package, modules()) for name, (path, package) in modules().items()}


def test_no_import_cycle_in_the_runtime():
    """Tarjan's strongly connected components over the import graph: every component is one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in GRAPH[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not cycles


# A layer may import itself and the layers after it in this list, never those before it.
LAYERS = ["s2s_runtime.cli", "s2s_runtime.serving", "s2s_runtime.model", "s2s_runtime.engine", "s2s_runtime.decoding"]


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_the_layers_below_it(layer):
    above = LAYERS[: LAYERS.index(layer)]
    for module, imported in GRAPH.items():
        if module == layer or module.startswith(layer + "."):
            wrong = {i for i in imported if any(i == a or i.startswith(a + ".") for a in above)}
            assert not wrong, f"{module} imports {wrong}"


def test_no_room_outgrows_the_floor_plan():
    too_big = []
    for path in ROOT.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            too_big.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                limit = 200 if node.name == "Seq2SeqModel" else 250
                if node.end_lineno - node.lineno + 1 > limit:
                    too_big.append(f"{path.name}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_big
