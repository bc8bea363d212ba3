"""What import-linter cannot say about the layers of `tasks/` (docs/architecture.md).

The layers themselves, and "only `tasks.cli` imports Invoke", are import-linter contracts in
pyproject.toml, run by `make lint`; `test_the_contracts_hold` runs them here too. This file keeps
the rules import-linter has no contract type for: every module sits in a layer package, no module
imports a private name from another, `alembic/env.py` stays off the CLI, the entry point stays
light, and a module over the size limit says why at its top.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

TASKS = ROOT / "tasks"
MODULES = sorted(TASKS.rglob("*.py"))
SIZE_LIMIT = 600
# Debts of the move into packages, paid when the branches of this round have landed (their
# authors are editing these files): remove an entry and the test holds the line again.
PRIVATE_IMPORT_DEBT: set[str] = set()
SIZE_DEBT = {
    "tasks.migrate.commands",
    "tasks.schema.fast_diff",
    "tasks.schema.sync",
    "tasks.core.environments",
    "tasks.fleet.targets",
    "tasks.core.comparison",
    "tasks.ci.checks",
}
HEAVY = {"sqlalchemy", "alembic", "psycopg2", "pymysql", "structlog", "pglast", "sqlglot"}


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def layer_packages() -> list[str]:
    (layers,) = [contract for contract in contracts() if contract["type"] == "layers"]
    return layers["layers"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_imports(path: Path) -> list[str]:
    """`from tasks.x import _name` (function bodies too): private names crossing a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "tasks"
        ):
            found += [f"{node.module}.{alias.name}" for alias in node.names if alias.name[0] == "_"]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda path: module_name(path))
def test_every_module_sits_in_a_layer_package(path: Path) -> None:
    name = module_name(path)
    if name == "tasks":
        return
    package = ".".join(name.split(".")[:2])
    assert package in layer_packages(), (
        f"{path.relative_to(ROOT)} is in no layer: put it in a package listed in pyproject.toml's "
        "layers contract"
    )


@pytest.mark.parametrize("path", MODULES, ids=lambda path: module_name(path))
def test_no_module_imports_a_private_name_from_another(path: Path) -> None:
    if module_name(path) in PRIVATE_IMPORT_DEBT:
        pytest.skip("debt of the move into packages")
    assert not private_imports(path), f"{path.relative_to(ROOT)} imports {private_imports(path)}"


def test_the_private_name_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tasks.migrate.commands import _script\n")
    assert private_imports(bad) == ["tasks.migrate.commands._script"]


@pytest.mark.parametrize("path", MODULES, ids=lambda path: module_name(path))
def test_a_long_module_says_why_at_its_top(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) <= SIZE_LIMIT or module_name(path) in SIZE_DEBT:
        return
    doc = ast.get_docstring(ast.parse("\n".join(lines))) or ""
    assert "Why this module is long" in doc, (
        f"{path.relative_to(ROOT)} has {len(lines)} lines (limit {SIZE_LIMIT}): split it, or say "
        "'Why this module is long: ...' in its docstring"
    )


def test_alembic_env_imports_no_cli_module_and_no_private_name() -> None:
    env = ROOT / "alembic" / "env.py"
    modules = {
        node.module
        for node in ast.walk(ast.parse(env.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not {module for module in modules if module.startswith("tasks.cli")}
    if "alembic.env" not in PRIVATE_IMPORT_DEBT:
        assert not private_imports(env)


def test_the_entry_point_stays_light() -> None:
    """`tasks.py` is read by `invoke --list`: no SQLAlchemy, Alembic or drivers at import."""
    tree = ast.parse((ROOT / "tasks.py").read_text(encoding="utf-8"))
    imported = {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    } | {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not imported & HEAVY


def test_listing_the_tasks_imports_no_heavy_library() -> None:
    """What `invoke --list` imports: the whole namespace, and none of the heavy libraries."""
    code = (
        "import runpy, sys; runpy.run_path('tasks.py', run_name='tasks'); "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(HEAVY)!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_listing_check_can_fail() -> None:
    code = (
        "import sqlalchemy, sys; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() != "[]"


@pytest.mark.skipif(
    not shutil.which("lint-imports", path=str(Path(sys.executable).parent)),
    reason="import-linter is a dev requirement",
)
def test_the_contracts_hold() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
