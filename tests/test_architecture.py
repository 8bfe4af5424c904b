"""The folders are rooms: each package imports only from the layers below
it (its docstring says which), and no two packages import each other."""

import ast
import pathlib

import concurrent_dirty

ROOT = pathlib.Path(concurrent_dirty.__file__).parent

#: Lower number, lower layer. A module may import its own package or lower.
LAYERS = {
    "errors": 0,
    "_core": 1,
    "model": 2,
    "schedulers": 2,
    "dirtylog": 3,
    "mutants": 4,
    "harness": 5,
    "engines": 6,
    "kvm": 6,
    "search": 7,
    "cli": 8,
    "__init__": 9,
    "__main__": 9,
}


def _room(module: str) -> str:
    """concurrent_dirty.model.kvm -> model; concurrent_dirty -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _all_imports(path: pathlib.Path) -> set[str]:
    """Every module of the package that ``path`` imports by name, wherever
    the import stands: at the top, inside a function, or under ``if
    TYPE_CHECKING:`` (a circle of type hints is a circle all the same). An
    import of a package's ``__init__`` counts only when it is named."""
    modules = {_module_of(p) for p in ROOT.rglob("*.py")}
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    found.add(f"{target}.{alias.name}")  # from . import module
                elif target in modules:
                    found.add(target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
    found.discard(module)
    return found


def _import_circles() -> list[list[str]]:
    """The strongly connected components of more than one file in the
    file-level import graph (Tarjan's algorithm), each sorted."""
    graph = {_module_of(p): _all_imports(p) for p in sorted(ROOT.rglob("*.py"))}
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
    return sorted(circles)


#: Known circles, each to be removed by the change that owns its files, not
#: new ones to add (the last, cli/fuzz.py <-> cli/scale.py, went with the
#: campaign value).
KNOWN_CIRCLES: list[list[str]] = []


def _runtime_imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import that runs (not the ones under
    ``if TYPE_CHECKING:``), including imports inside functions."""
    tree = ast.parse(path.read_text())
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    skip.add(id(sub))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("concurrent_dirty"):
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
                found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names
                      if a.name.startswith("concurrent_dirty")]
    return found


def _edges() -> list[tuple[str, str, str, int]]:
    edges = []
    for path in sorted(ROOT.rglob("*.py")):
        src = _room(_module_of(path))
        for line, target in _runtime_imports(path):
            edges.append((src, _room(target), str(path.relative_to(ROOT.parent)), line))
    return edges


def test_every_room_has_a_layer():
    rooms = {_room(_module_of(p)) for p in ROOT.rglob("*.py")}
    assert rooms <= set(LAYERS), f"rooms without a layer: {sorted(rooms - set(LAYERS))}"


def test_no_module_imports_from_a_higher_layer():
    upward = [f"{where}:{line}: {src} (layer {LAYERS[src]}) imports {dst} "
              f"(layer {LAYERS[dst]})"
              for src, dst, where, line in _edges() if LAYERS[dst] > LAYERS[src]]
    assert upward == []


def test_no_two_rooms_import_each_other():
    pairs = {(src, dst) for src, dst, _, _ in _edges() if src != dst}
    cycles = sorted(f"{a} <-> {b}" for a, b in pairs if (b, a) in pairs and a < b)
    assert cycles == []


def test_the_runtime_names_no_part_of_the_domain():
    text = (ROOT / "_core" / "runtime.py").read_text()
    for word in ("mmu_lock", "srcu", "bitmap", "vcpu", "harvester", "kvm"):
        assert word not in text.lower(), f"_core/runtime.py mentions {word!r}"


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    # The test above can fail: a model module importing the harness is caught.
    fake = tmp_path / "concurrent_dirty" / "model"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from ..harness.execution import Vm\n")
    import sys

    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path / "concurrent_dirty")
    edges = _edges()
    assert ("model", "harness", "concurrent_dirty/model/bad.py", 1) in edges


def test_no_file_imports_itself_through_others():
    # Type-checking imports count: errors.py imports nothing from above (its
    # ExecutionFailed.result is a protocol), nor do trace.py and token.py
    # import the execution that imports them.
    circles = [c for c in _import_circles() if c not in KNOWN_CIRCLES]
    assert circles == []


def test_the_circle_checker_sees_a_circle_within_one_package(tmp_path, monkeypatch):
    # The test above can fail: two files of one package that import each
    # other, one of them only for type hints, are one circle.
    fake = tmp_path / "concurrent_dirty" / "harness"
    fake.mkdir(parents=True)
    (tmp_path / "concurrent_dirty" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "execution.py").write_text("from .trace import format_trace\n")
    (fake / "trace.py").write_text("from typing import TYPE_CHECKING\n"
                                   "if TYPE_CHECKING:\n"
                                   "    from .execution import ExecutionResult\n")
    (fake / "oracle.py").write_text("from . import execution\n")
    import sys

    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path / "concurrent_dirty")
    assert _import_circles() == [["concurrent_dirty.harness.execution",
                                  "concurrent_dirty.harness.trace"]]
