"""The package's imports point down: a layer never imports a layer above it, and no two
modules import each other, directly or through others (function-level imports included)."""

import ast
from pathlib import Path

import seemore

ROOT = Path(seemore.__file__).parent

# each module's layer, by its dotted name's longest listed prefix; a module may import from
# its own layer and those below
LAYERS = {
    "errors": 0,
    "config": 1, "device": 1,
    "tokenizer": 2, "prompt": 2, "data.images": 2, "generation": 2, "grid": 2,
    "layers": 3,
    "models": 4, "pretrained": 4,
    "data": 5,
    "evaluation": 6, "probe": 6, "attend": 6, "plot": 6, "tracking": 6,
    "objectives": 7,
    "train": 8, "recipes": 8, "serving": 8,
    "cli": 9, "__main__": 9, "": 9,
}


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), -1, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise KeyError(module)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports."""
    graph = {}
    for path in ROOT.rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("seemore"):
                    found.add(name.removeprefix("seemore").removeprefix("."))
        graph[module_name(path)] = found
    # "from seemore.data import digits" names a module; "from seemore.x import f" a function
    return {m: {i for i in deps if i in graph} for m, deps in graph.items()}


def test_imports_point_down():
    upward = [f"{m} (layer {layer(m)}) imports {i} (layer {layer(i)})"
              for m, deps in imports().items() for i in deps if layer(i) > layer(m)]
    assert not upward, "\n".join(upward)


def test_config_imports_nothing_but_errors():
    assert imports()["config"] <= {"errors"}


def test_no_import_cycles():
    graph = imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for i in sorted(graph[m] - {m}):
            if state.get(i) == 1:
                return path + [m, i]
            if i not in state and (cycle := visit(i, path + [m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m, [])
            assert cycle is None, " -> ".join(cycle)
