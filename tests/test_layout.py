"""The package layout the design promises, read from the source: kfac_thermo's modules import each other without a
cycle, the natural-gradient and K-FAC families never import each other, and the shared layers below them import
neither family."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "kfac_thermo"
FAMILIES = ("kfac_thermo._ngd", "kfac_thermo._kfac")
# The layers both families build on: they must not import a family (the K-FAC solvers belong to their family).
SHARED = ("kfac_thermo._common", "kfac_thermo._work", "kfac_thermo._solver", "kfac_thermo._losses",
          "kfac_thermo._kernels", "kfac_thermo._model", "kfac_thermo._curvature", "kfac_thermo._parallel",
          "kfac_thermo._predict")


def module_name(path: pathlib.Path) -> str:
    parts = ("kfac_thermo",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in ROOT.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The kfac_thermo modules ``name`` imports at run time (imports under ``if TYPE_CHECKING:`` left out)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for branch in ast.walk(tree) if isinstance(branch, ast.If)
                   and getattr(branch.test, "id", None) == "TYPE_CHECKING" for node in ast.walk(branch)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found |= {n for n in names if n in MODULES}
    return found - {name}


GRAPH = {name: imports(name) for name in MODULES}


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_modules_are_found():
    assert {"kfac_thermo._ngd._transform", "kfac_thermo._kfac._transform", "kfac_thermo._model._tapped"} <= set(GRAPH)
    assert "kfac_thermo._common" in GRAPH["kfac_thermo._ngd._transform"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_cycle(name):
    assert name not in reachable(name), f"{name} imports itself through {sorted(reachable(name))}"


@pytest.mark.parametrize("family,other", [FAMILIES, FAMILIES[::-1]])
def test_families_do_not_import_each_other(family, other):
    for name in MODULES:
        if inside(name, family):
            assert not any(inside(target, other) for target in reachable(name)), name


@pytest.mark.parametrize("name", sorted(n for n in MODULES if any(inside(n, shared) for shared in SHARED)))
def test_shared_layers_import_no_family(name):
    assert not any(inside(t, family) for t in reachable(name) for family in FAMILIES), (name, sorted(reachable(name)))
