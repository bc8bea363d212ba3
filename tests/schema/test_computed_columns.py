"""A computed (generated) column in the models, on every dialect (issue 17).

Alembic hands a callable `compare_server_default` the reflected default's `.arg.text` without
checking what it reflected: a generated column reflects as `Computed`, which has no `.arg`, so
`dev.check` crashed with `'Computed' object has no attribute 'arg'` wherever the tasks (SQLite,
MariaDB: their known-false-positive comparator) or a team's env.py passed a callable. Computed
and identity columns are compared by Alembic's own rules for them and never reach the server
default comparison.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import Column, Computed, Identity, Integer, MetaData, Numeric, String, Table

from tasks.core.alembic_internals import guard_user_default_comparison
from tasks.core.comparison import Comparison
from tasks.core.errors import ExitCode
from tests.helpers import assert_ok

MODELS = "tests.schema.test_computed_columns:models"


def models() -> MetaData:
    metadata = MetaData()
    Table(
        "line_items",
        metadata,
        Column("id", Integer, Identity(), primary_key=True),
        Column("sku", String(40), nullable=False, server_default="none"),
        Column("price", Numeric(10, 2), nullable=False),
        Column("quantity", Integer, nullable=False),
        Column("total", Numeric(12, 2), Computed("price * quantity", persisted=True)),
    )
    return metadata


def _build(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            models().create_all(connection)
    finally:
        engine.dispose()


def _user_says_no_difference(context, inspected, metadata, database_default, model_default,
                             rendered_model_default):  # fmt: skip
    return None  # a team's hook that defers to Alembic


def test_a_computed_column_checks_clean_on_every_dialect(project, any_url):
    _build(any_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", any_url)
    project.setenv("DATABASE_URL_LOCAL", any_url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", MODELS)

    checked = project.invoke("dev.check")

    assert "Traceback" not in checked.output and "has no attribute" not in checked.output
    assert_ok(checked)
    synced = project.invoke_alone("local.sync", "--check")
    assert synced.code == ExitCode.OK, synced.output


@pytest.mark.parametrize("user", [True, _user_says_no_difference], ids=["tasks", "team-hook"])
def test_autogenerate_options_compare_computed_and_identity_columns_cleanly(any_url, user):
    """The options autogenerate runs under (the tasks' comparator on SQLite and MariaDB, or a
    team's own callable on every dialect): no crash, and neither the computed column nor the
    identity column (MariaDB and SQLite reflect none) is a server default change."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    _build(any_url)
    guard_user_default_comparison()
    engine = sa.create_engine(any_url)
    try:
        with engine.connect() as connection:
            options = Comparison(compare_server_default=user).options(connection.dialect.name)
            context = MigrationContext.configure(connection, opts=options)
            diffs = compare_metadata(context, models())
    finally:
        engine.dispose()
    flat = [d for diff in diffs for d in (diff if isinstance(diff, list) else [diff])]
    assert [d for d in flat if d[0] == "modify_default"] == [], flat


@pytest.mark.parametrize(
    ("database", "model", "same"),
    [
        ("0", "false", True),
        ("'1'", "true", True),
        ("(0)", "false", True),
        ("1", "false", False),
        ("0", "'0'", False),  # a string default is not a boolean one
        ("0", "0", False),  # already equal: Alembic itself never reports it
    ],
)
def test_mariadb_stores_a_boolean_default_as_0_or_1(database, model, same):
    """mlflow's `server_default=sa.false()` reflects as `0` on MariaDB: not a difference."""
    from tasks.core.comparison import same_default

    assert same_default("mysql", database, model) is same
    assert same_default("postgresql", database, model) is False
