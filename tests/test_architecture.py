"""The layers of `tasks/` and the direction of their imports (docs/architecture.md).

Every module belongs to one layer; a module may import its own layer and the layers below,
never above, and only the task layer imports Invoke. A new module must be placed in a layer
here before the suite passes: an unplaced module is a failure, not a pass.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

TASKS = ROOT / "tasks"

# Lowest first. The names are module stems under tasks/; `*_tasks` modules are the task layer.
LAYERS: dict[str, set[str]] = {
    "base": {
        "errors",
        "settings",
        "environments",
        "engines",
        "metadata",
        "redaction",
        "console",
        "confirmation",
        "run_log",
        "session",
        "interrupts",
        "locations",
    },
    "operations": {
        "alembic_support",
        "alembic_threads",
        "migrations",
        "plan",
        "lint",
        "backups",
        "ci_checks",
        "sync",
        "sync_diff",
        "drift",
        "graph",
        "ddl_residue",
        "comparison",
        "safe_ops",
        "safe_revisions",
        "verbs",
        "plan_markdown",
        "locking",
    },
    "runner": {"runner", "audit", "ownership", "fleet", "fleet_commands"},
    "tasks": {"namespace", "context"},
}
ORDER = list(LAYERS)


def layer_of(module: str) -> str:
    if module.endswith("_tasks"):
        return "tasks"
    for layer, modules in LAYERS.items():
        if module in modules:
            return layer
    raise AssertionError(f"tasks/{module}.py is in no layer: add it to LAYERS in {__file__}")


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(modules of `tasks` it imports, top-level packages it imports), function bodies too."""
    ours: set[str] = set()
    packages: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tasks":
                ours |= {alias.name for alias in node.names}
            elif node.module.startswith("tasks."):
                ours.add(node.module.split(".")[1])
            packages.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tasks."):
                    ours.add(alias.name.split(".")[1])
                packages.add(alias.name.split(".")[0])
    return ours, packages


MODULES = sorted(path for path in TASKS.glob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.stem)
def test_imports_point_down(path: Path) -> None:
    layer = ORDER.index(layer_of(path.stem))
    ours, _ = imports_of(path)
    upward = sorted(name for name in ours if ORDER.index(layer_of(name)) > layer)
    assert not upward, f"tasks/{path.name} ({ORDER[layer]}) imports a higher layer: {upward}"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.stem)
def test_only_the_task_layer_imports_invoke(path: Path) -> None:
    _, packages = imports_of(path)
    if layer_of(path.stem) != "tasks":
        assert "invoke" not in packages, f"tasks/{path.name} imports invoke below the task layer"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The test above can fail: an operation importing the runner is caught."""
    bad = tmp_path / "migrations.py"
    bad.write_text("def f():\n    from tasks.runner import GuardedRun\n")
    ours, _ = imports_of(bad)
    assert ORDER.index(layer_of(next(iter(ours)))) > ORDER.index(layer_of("migrations"))


def test_the_entry_point_stays_light() -> None:
    """`tasks.py` is read by `invoke --list`: no SQLAlchemy, Alembic or drivers at import."""
    _, packages = imports_of(ROOT / "tasks.py")
    assert not packages & {"sqlalchemy", "alembic", "psycopg2", "pymysql"}


def test_listing_the_tasks_imports_no_heavy_library() -> None:
    """What `invoke --list` imports: the whole namespace, and none of the heavy libraries."""
    import subprocess
    import sys

    code = (
        "import sys, tasks; tasks.namespace.task_names; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'sqlalchemy', 'alembic', 'psycopg2', 'pymysql', 'structlog', 'pglast', 'sqlglot'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
