"""The layering is a contract: docs/ARCHITECTURE.md describes it, these tests hold the code to it."""

from __future__ import annotations

import shutil
import subprocess
import sys
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


def _cycles(graph, modules: set[str]) -> list[list[str]]:
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
        for other in graph.find_modules_directly_imported_by(node) & modules:
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


def test_there_are_no_import_cycles():
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    graph = grimp.build_graph("engine", "cli", "gui", cache_dir=None)
    modules = {m for m in graph.modules if m.split(".")[0] in ("engine", "cli", "gui")}
    # A package's __init__ re-exporting its children is not a cycle of design.
    parents = {m for m in modules if any(o.startswith(m + ".") for o in modules)}
    assert _cycles(graph, modules - parents) == []


def test_no_engine_source_imports_qt_or_a_front_end():
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] in ("PySide6", "pyqtgraph", "gui", "cli"):
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []


def test_no_function_over_80_lines_and_no_module_over_500():
    import ast

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
