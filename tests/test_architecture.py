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
