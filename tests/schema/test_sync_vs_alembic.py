"""`local.sync --check` and Alembic's `compare_metadata`, side by side on the same databases.

For every scenario (tests/sync_scenarios.py) the database is created from one model set and
compared with another, once through the task as a user runs it (`--check --json`) and once
through Alembic with type and server-default comparison on. The differences must be the same;
the report must also sort them into the expected kinds and exit with the documented code.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from tasks.core.comparison import Comparison, filter_diffs
from tests import sync_scenarios
from tests.sync_scenarios import SCENARIOS

TOOL_TABLES = {"alembic_version", "migration_audit", "migration_checksums"}


@pytest.fixture
def database_url(any_url: str) -> str:
    return any_url


def family(url: str) -> str:
    backend = sa.make_url(url).get_backend_name()
    return "mysql" if backend in {"mysql", "mariadb"} else backend


def expected(values: dict[str, Any], url: str) -> Any:
    """Per-dialect expectation; MySQL/MariaDB can ALTER like PostgreSQL unless it says more."""
    return values.get(family(url), values["postgresql"])


def create_database(url: str, metadata: sa.MetaData) -> None:
    """The scenario's database, with rows in both tables (NOT NULL columns need them)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            metadata.create_all(connection)
            connection.execute(
                metadata.tables["parent"].insert(),
                [{"id": 1, "name": "first", "code": "a"}, {"id": 2, "name": "second", "code": "b"}],
            )
            connection.execute(
                metadata.tables["child"].insert(),
                [{"id": 1, "parent_id": 1, "label": "x"}, {"id": 2, "parent_id": 2, "label": "y"}],
            )
    finally:
        engine.dispose()


def _include_name(name: str | None, type_: str, _parents: dict[str, Any]) -> bool:
    return not (type_ == "table" and name in TOOL_TABLES)


def alembic_keys(url: str, metadata: sa.MetaData) -> set[tuple[str, ...]]:
    """Alembic's differences, written the way the report's `alembic` field writes them."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_name": _include_name,
                },
            )
            diffs = compare_metadata(context, metadata)
            dialect = connection.dialect.name
    finally:
        engine.dispose()
    flat = [item for diff in diffs for item in (diff if isinstance(diff, list) else [diff])]
    # Alembic's raw result minus the known dialect false positives (tasks.core.comparison, tested
    # on their own in tests/schema/test_sync_dialects.py): the rest must agree item by item.
    return {_alembic_key(item) for item in filter_diffs(Comparison(), dialect, flat)}


def _alembic_key(diff: tuple[Any, ...]) -> tuple[str, ...]:
    op = diff[0]
    if op in {"add_table", "remove_table", "add_table_comment", "remove_table_comment"}:
        return (op, diff[1].name, "")
    if op in {"add_column", "remove_column"}:
        return (op, diff[2], diff[3].name)
    if op.startswith("modify_"):
        return (op, diff[2], diff[3])
    if op in {"add_index", "remove_index"}:
        return (op, diff[1].table.name, diff[1].name)
    if op in {"add_constraint", "remove_constraint"}:
        constraint = diff[1]
        if isinstance(constraint.name, str):
            return (op, constraint.table.name, constraint.name)
        return (
            op,
            constraint.table.name,
            "(" + ", ".join(c.name for c in constraint.columns) + ")",
        )
    if op in {"add_fk", "remove_fk"}:
        fk = diff[1]
        columns = ", ".join(fk.columns[key].name for key in fk.column_keys)
        target = fk.elements[0].column.table.name
        target_columns = ", ".join(element.column.name for element in fk.elements)
        return (op, fk.parent.name, f"({columns}) -> {target}({target_columns})")
    raise AssertionError(f"unexpected Alembic diff {diff!r}")


def check_report(project, url: str, scenario: str) -> tuple[int, dict[str, Any]]:
    project.setenv("DATABASE_URL_LOCAL", url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", f"tests.sync_scenarios:models__{scenario}")
    result = project.invoke("local.sync", "--check", "--json")
    assert result.stdout.strip(), result.output
    return result.code, json.loads(result.stdout)


def reported_keys(report: dict[str, Any]) -> set[tuple[str, ...]]:
    return {
        tuple(key)
        for table in report["tables"]
        for difference in table["differences"]
        for key in difference["alembic"]
    }


def reported_kinds(report: dict[str, Any]) -> set[str]:
    return {d["kind"] for table in report["tables"] for d in table["differences"]}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_check_agrees_with_alembic(project, database_url, scenario):
    case = SCENARIOS[scenario]
    if family(database_url) == "mysql" and "expression" in scenario:
        pytest.skip("MariaDB has no expression indexes")
    create_database(database_url, case.database())

    code, report = check_report(project, database_url, scenario)

    assert reported_keys(report) == alembic_keys(database_url, case.models())
    assert reported_kinds(report) == expected(case.kinds, database_url)
    assert code == expected(case.exit_codes, database_url) == report["exit_code"]


def test_scenario_models_resolve_by_path():
    """The `module:attribute` paths the tests use return fresh model sets each time."""
    first = sync_scenarios.models__missing_column()
    second = sync_scenarios.models__missing_column()
    assert first is not second and "note" in first.tables["child"].c


def test_tool_tables_are_neither_synced_nor_reported(project, database_url):
    create_database(database_url, SCENARIOS["in_sync"].database())
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        connection.execute(sa.text("CREATE TABLE migration_audit (id INTEGER PRIMARY KEY)"))
    engine.dispose()

    code, report = check_report(project, database_url, "in_sync")

    assert code == 0 and report["status"] == "in_sync", report
