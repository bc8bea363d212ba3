"""What import-linter cannot say about the layers of `tasks/` (docs/architecture.md).

The layers themselves, and "only `tasks.cli` imports Invoke", are import-linter contracts in
pyproject.toml, run by `make lint`; `test_the_contracts_hold` runs them here too. This file keeps
the rules import-linter has no contract type for: every module sits in a layer package, no module
imports a private name from another, `alembic/env.py` stays off the CLI, the entry point stays
light, and a module over the size limit says why at its top.
"""

from __future__ import annotations

import ast
import re
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
    "tasks.schema.sync",
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


# --- Alembic's and SQLAlchemy's private names: only in tasks/core/alembic_internals.py ---------

ALEMBIC_INTERNALS = TASKS / "core" / "alembic_internals.py"
# Underscore names SQLAlchemy documents as public: Row's named-tuple API.
PUBLIC_UNDERSCORE = frozenset({"_mapping", "_asdict", "_fields", "_t", "_tuple"})
_DEFINED_PRIVATE = re.compile(
    r"(?:\bdef |\bclass |\bself\.|\bcls\.|^\s*)(_[A-Za-z]\w*)\s*[(:=]", re.M
)


def library_private_names() -> frozenset[str]:
    """Every `_name` Alembic and SQLAlchemy define (functions, classes, attributes, globals)."""
    import alembic
    import sqlalchemy

    names: set[str] = set()
    for package in (alembic, sqlalchemy):
        for path in Path(package.__file__).parent.rglob("*.py"):
            names.update(
                _DEFINED_PRIVATE.findall(path.read_text(encoding="utf-8", errors="replace"))
            )
    return frozenset(name for name in names if not name.startswith("__"))


def own_private_names() -> frozenset[str]:
    """`_name`s the project defines itself (a Session's `_script`, a cache's `_type_verdicts`);
    what alembic_internals assigns on library objects (`_create_rule`) is not the project's."""
    names: set[str] = set()
    for path in [*MODULES, ROOT / "alembic" / "env.py"]:
        if path == ALEMBIC_INTERNALS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name | ast.arg):
                names.add(node.id if isinstance(node, ast.Name) else node.arg)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return frozenset(name for name in names if name.startswith("_"))


def library_privates_read(path: Path, library: frozenset[str], own: frozenset[str]) -> list[str]:
    """`x._name` attribute reads in `path` whose `_name` is Alembic's or SQLAlchemy's, not ours."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") or node.attr in PUBLIC_UNDERSCORE or node.attr in own:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in {"os", "sys"}:
            continue  # the standard library's own (os._exit)
        if node.attr in library:
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


def test_only_alembic_internals_reads_private_alembic_or_sqlalchemy_names() -> None:
    library, own = library_private_names(), own_private_names()
    offenders = {
        str(path.relative_to(ROOT)): library_privates_read(path, library, own)
        for path in [*MODULES, ROOT / "alembic" / "env.py"]
        if path != ALEMBIC_INTERNALS
    }
    offenders = {path: found for path, found in offenders.items() if found}
    assert not offenders, (
        f"private Alembic/SQLAlchemy names outside tasks/core/alembic_internals.py: {offenders}; "
        "wrap each in a named function there, with the versions it was checked on"
    )


def test_the_library_private_name_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(table):\n    return table._autoincrement_column\n")
    library = library_private_names()
    assert "_autoincrement_column" in library and "_setups" in library
    assert library_privates_read(bad, library, own_private_names()) == [
        "line 2: ._autoincrement_column"
    ]
