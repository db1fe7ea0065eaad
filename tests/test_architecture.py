"""The layering is a contract: docs/ARCHITECTURE.md describes it, these tests hold the code to it."""

from __future__ import annotations

import ast
import functools
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
QT = ("PySide6", "shiboken6", "pyqtgraph", "gui", "PyQt5", "PyQt6")


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(','.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.strip().split(","))


def test_import_engine_loads_neither_torch_nor_qt():
    loaded = _loaded_after("import engine")
    assert "torch" not in loaded
    assert not loaded & set(QT)


def test_the_core_and_the_demo_catalogue_stay_torch_free_when_used():
    code = (
        "import engine.core.errors, engine.core.progress, engine.core.params, engine.core.explanation, engine.core.vocab, engine.core.versions\n"
        "import engine.demo.catalogue, engine.stats.sobol, engine.core.jsonable\n"
        "engine.core.versions.versions()\n"
        "from engine import UserError, CancelToken, sobol_indices"
    )
    assert "torch" not in _loaded_after(code)


def test_lazy_attributes_resolve_to_the_real_objects():
    import engine
    from engine.methods.runner import explain
    from engine.models.loading import load_model

    assert engine.explain is explain and engine.load_model is load_model
    assert {"explain", "load_model", "sobol_indices", "UserError"} <= set(dir(engine))
    with pytest.raises(AttributeError):
        engine.no_such_name  # noqa: B018


def test_the_cli_parser_starts_without_torch():
    # `main.py --help` and `--version` must be instant: torch loads only inside a command.
    loaded = _loaded_after("import cli.main\ncli.main.build_parser().format_help()")
    assert "torch" not in loaded


def test_the_cli_and_engine_load_no_qt_even_when_running_methods():
    loaded = _loaded_after("import cli.main, engine\nengine.available_methods()")
    assert not loaded & set(QT)


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a test dependency"
    run = subprocess.run([lint, "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def _cycles(imported_by: Callable[[str], set[str]], modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in imported_by(node) & modules:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


@functools.cache
def _grimp_graph():
    return grimp.build_graph("engine", "cli", "gui", cache_dir=None)


# Every import by name in engine/ hides an edge from grimp, and so from the cycle check below and
# from import-linter: these are the only ones allowed, (file, function) -> why. The lazy tables'
# edges are added to the cycle check (``_lazy_edges``), so a circle through them is still found.
DYNAMIC_IMPORTS = {
    ("engine/__init__.py", "__getattr__"): "PEP 562 lazy attributes: the modules of the _EXPORTS table (edges added below)",
    ("engine/app/_lazy.py", "__getattr__"): "PEP 562 lazy attributes of engine.app's modules: their lazy_exports(__name__, {...}) tables (edges added below)",
    ("engine/app/_lazy.py", "lazy_exports"): "the calling module itself, by its own __name__, to reach its namespace (already imported: no edge)",
    ("engine/methods/_registry.py", "_load_all"): (
        "plugin discovery: pkgutil lists engine.methods' public modules, which import the registry to register"
        " their methods; the registry imports them only when first asked for a method (an edge back would be a"
        " circle by design, so none is added)"
    ),
    ("engine/models/user_class.py", "_module_from_name"): "the user's own module of module:Class, named by the user; never an engine module",
}


def _is_import_by_name(function: ast.expr) -> bool:
    name = function.id if isinstance(function, ast.Name) else function.attr if isinstance(function, ast.Attribute) else ""
    return name in ("import_module", "__import__")


def _dynamic_imports() -> list[tuple[str, str, int]]:
    """(file, innermost enclosing function or <module>, line) of every importlib.import_module and
    __import__ call in engine/."""
    found = []

    def walk(node: ast.AST, path: str, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Call) and _is_import_by_name(child.func):
                found.append((path, function, child.lineno))
            walk(child, path, child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function)

    for path in sorted((ROOT / "engine").rglob("*.py")):
        walk(ast.parse(path.read_text(encoding="utf-8")), path.relative_to(ROOT).as_posix(), "<module>")
    return found


def test_the_engine_imports_by_name_only_where_the_allow_list_says_why():
    found = _dynamic_imports()
    assert [f"{path}:{line} in {function}" for path, function, line in found if (path, function) not in DYNAMIC_IMPORTS] == []
    # The method registry's discovery is the one import by name among the methods.
    assert [(path, function) for path, function, _ in found if path.startswith("engine/methods/")] == [("engine/methods/_registry.py", "_load_all")]


def _table_modules(table: ast.Dict, where: str) -> set[str]:
    modules = set()
    for value in table.values:
        assert isinstance(value, ast.Constant) and isinstance(value.value, str), f"{where}: a lazy table's values must be string literals (the cycle check reads them)"
        modules.add(value.value.partition(":")[0])
    return modules


def _lazy_edges() -> dict[str, set[str]]:
    """The imports the PEP 562 lazy tables make on first use, which grimp cannot see: engine's
    ``_EXPORTS`` and every ``lazy_exports(__name__, {...})`` table of an engine module."""
    edges: dict[str, set[str]] = {}
    for path in sorted((ROOT / "engine").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        where = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
                edges.setdefault(module, set()).update(_table_modules(node.value, where))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "lazy_exports":
                assert len(node.args) == 2 and isinstance(node.args[0], ast.Name) and node.args[0].id == "__name__", f"{where}: lazy_exports(__name__, {{...}})"
                assert isinstance(node.args[1], ast.Dict), f"{where}: lazy_exports takes its table as a dict literal (the cycle check reads it)"
                edges.setdefault(module, set()).update(_table_modules(node.args[1], where))
    return edges


def _import_graph() -> tuple[Callable[[str], set[str]], set[str]]:
    """The direct imports of a module (grimp's and the lazy tables'), and the modules checked."""
    graph = _grimp_graph()
    lazy = _lazy_edges()
    modules = {m for m in graph.modules if m.split(".")[0] in ("engine", "cli", "gui")}
    # A package's __init__ re-exporting its children is not a cycle of design; one with a lazy
    # table (engine itself) is checked all the same, with the table's edges.
    parents = {m for m in modules if any(o.startswith(m + ".") for o in modules)}

    def imported_by(module: str) -> set[str]:
        return graph.find_modules_directly_imported_by(module) | lazy.get(module, set())

    return imported_by, (modules - parents) | set(lazy)


def test_there_are_no_import_cycles():
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    imported_by, modules = _import_graph()
    assert _cycles(imported_by, modules) == []


@pytest.mark.parametrize(
    "table,lazy_target,back_from",
    [("engine", "engine.methods.runner", "engine.methods.runner"), ("engine.app.models", "engine.models.loading", "engine.models.loading")],
)
def test_a_circle_through_a_lazy_table_would_be_found(table, lazy_target, back_from):
    """The cycle check sees the lazy tables: an import back into a module that offers a name lazily
    (``import engine`` inside the runner, say) closes a circle that it reports."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    assert lazy_target in _lazy_edges()[table]
    imported_by, modules = _import_graph()
    assert table in modules

    def with_an_edge_back(module: str) -> set[str]:
        return imported_by(module) | ({table} if module == back_from else set())

    assert any(table in cycle and back_from in cycle for cycle in _cycles(with_an_edge_back, modules))


def test_only_engine_accel_imports_its_private_modules():
    """The speed-ups have one public interface, engine.accel's names (pyproject.toml holds the
    methods to it for the present private modules; this check covers new ones too)."""
    graph = _grimp_graph()
    private = {m for m in graph.modules if m.startswith("engine.accel._")}
    assert private
    offenders = [f"{importer} -> {module}" for module in sorted(private) for importer in graph.find_modules_that_directly_import(module) if not importer.startswith("engine.accel")]
    assert offenders == []


def test_no_engine_source_imports_qt_or_a_front_end():
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] in ("PySide6", "pyqtgraph", "gui", "cli"):
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []


def test_no_function_over_80_lines_and_no_module_over_500():
    long_functions, long_modules = [], []
    for path in sorted([*(ROOT / "engine").rglob("*.py"), *(ROOT / "cli").rglob("*.py"), *(ROOT / "gui").rglob("*.py"), ROOT / "main.py"]):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 500:
            long_modules.append(str(path.relative_to(ROOT)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long_functions.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert long_functions == [] and long_modules == []


APP_MODULES = ("models", "data", "explain", "runs", "tabular", "system")


def test_the_application_layer_imports_without_torch_and_every_name_it_offers_resolves():
    """engine.app is the front-ends' door: importing it (every module) costs no torch, and every
    name a module offers is a real object of the engine."""
    import importlib

    code = "import engine.app\n" + "".join(f"import engine.app.{name}\n" for name in APP_MODULES)
    assert "torch" not in _loaded_after(code)
    for name in APP_MODULES:
        module = importlib.import_module(f"engine.app.{name}")
        offered = [n for n in dir(module) if not n.startswith("_") and n not in ("annotations", "TYPE_CHECKING", "Any", "lazy_exports")]
        for attribute in offered:
            assert getattr(module, attribute) is not None, f"engine.app.{name}.{attribute}"
    from engine.app.models import load_model
    from engine.models.loading import load_model as real

    assert load_model is real
