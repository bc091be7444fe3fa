"""The packages' import graph, read from the source (ast) without importing anything: no cycles, and thermox's
private modules stay private.

A module's imports at module level are the ones executed when it is imported (its body, including ``if`` /
``try`` / ``with`` blocks and class bodies, but not function bodies nor ``if TYPE_CHECKING:`` blocks); its
deferred imports are those inside functions. An import of ``a.b.c`` also runs the ``__init__`` of each package on
the way that does not already contain the importer (``a`` and ``a.b`` from outside ``a``); a package's own
submodules importing each other do not re-run it.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("experiments", "kfac_thermo", "thermox")


def package_modules() -> dict[str, pathlib.Path]:
    """Dotted name -> file of every module of PACKAGES (a package is its ``__init__.py``)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def executed_imports(body: list[ast.stmt]):
    """The Import / ImportFrom statements that run when ``body`` (a module's) runs."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If):
            if not is_type_checking(node.test):
                yield from executed_imports(node.body)
            yield from executed_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(handler.body for handler in node.handlers), node.orelse, node.finalbody):
                yield from executed_imports(block)
        elif isinstance(node, (ast.With, ast.For, ast.While, ast.ClassDef)):
            yield from executed_imports(node.body)
            yield from executed_imports(getattr(node, "orelse", []))


def all_imports(body: list[ast.stmt]):
    """Every Import / ImportFrom statement of a module that can run, deferred (inside functions) ones included;
    ``if TYPE_CHECKING:`` blocks never run."""
    stack = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement asks for: modules, or ``module.attribute`` for a from-import."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = module if is_package else module.rpartition(".")[0]
    base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
    return [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]


def dependencies(module: str, path: pathlib.Path, modules: dict[str, pathlib.Path], statements=executed_imports,
                 ) -> set[str]:
    """The modules of PACKAGES that ``module`` imports directly in ``statements`` (by default those executed
    when it is imported; see the module docstring)."""
    is_package = path.name == "__init__.py"
    own_packages = {module} if is_package else set()
    parts = module.split(".")
    own_packages |= {".".join(parts[:i]) for i in range(1, len(parts))}
    found = set()
    for node in statements(ast.parse(path.read_text(), str(path)).body):
        for name in imported_names(node, module, is_package):
            pieces = name.split(".")
            for i in range(1, len(pieces) + 1):
                prefix = ".".join(pieces[:i])
                if prefix in modules and prefix not in own_packages and prefix != module:
                    found.add(prefix)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_walker_sees_a_cycle_and_the_real_edges():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    modules = package_modules()
    trainer = dependencies("experiments.trainer", modules["experiments.trainer"], modules)
    assert {"experiments.rundir", "experiments.task", "kfac_thermo"} <= trainer
    assert "experiments" not in trainer  # its own package's __init__ is already running
    tasks = dependencies("experiments.tasks", modules["experiments.tasks"], modules, all_imports)
    assert "experiments.qa" in tasks  # imported inside build_task


@pytest.mark.parametrize("statements", [executed_imports, all_imports], ids=["module level", "deferred too"])
def test_no_import_cycle_in_the_packages(statements):
    """No cycle among the imports that run on import; nor when the imports inside functions count too (a deferred
    import that closes a cycle only hides it)."""
    modules = package_modules()
    graph = {name: dependencies(name, path, modules, statements) for name, path in modules.items()}
    cycles = import_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(cycle) for cycle in cycles)


def private_thermox_uses(path: pathlib.Path) -> list[str]:
    """``file:line name`` for each import of, or attribute reach into, a ``thermox._*`` name in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute):
            chain = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name):
                names = [".".join([value.id, *reversed(chain)])]
        for name in names:
            head, *rest = name.split(".")
            if head == "thermox" and any(part.startswith("_") and not part.startswith("__") for part in rest):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
                break
    return sorted(set(found))


def test_no_thermox_private_name_is_used_outside_thermox():
    files = [path for folder in ("experiments", "kfac_thermo", "scripts") for path in (ROOT / folder).rglob("*.py")]
    uses = [use for path in sorted(files + list(ROOT.glob("*.py"))) for use in private_thermox_uses(path)]
    assert not uses, "thermox private names used outside thermox: " + ", ".join(uses)
