"""A computed (generated) column in the models, on every dialect (issue 17).

Alembic hands a callable `compare_server_default` the reflected default's `.arg.text` without
checking what it reflected: a generated column reflects as `Computed`, which has no `.arg`, so
`dev.check` crashed with `'Computed' object has no attribute 'arg'` wherever the tasks (SQLite,
MariaDB: their known-false-positive comparator) or a team's env.py passed a callable. Computed
and identity columns are compared by Alembic's own rules for them and never reach the server
default comparison.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import Column, Computed, Integer, MetaData, Numeric, String, Table

from tasks.core.comparison import Comparison
from tasks.core.errors import ExitCode
from tasks.schema.drift import compare
from tests.helpers import assert_ok

MODELS = "tests.schema.test_computed_columns:models"


def models() -> MetaData:
    metadata = MetaData()
    Table(
        "line_items",
        metadata,
        Column("id", Integer, primary_key=True),
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


def test_a_callable_default_comparator_never_sees_a_computed_column(any_url):
    """With a team's own callable (passed on every dialect), Alembic's comparison still runs."""
    _build(any_url)
    engine = sa.create_engine(any_url)
    try:
        with engine.connect() as connection:
            diffs = compare(
                connection, models(), Comparison(compare_server_default=_user_says_no_difference)
            )
    finally:
        engine.dispose()
    assert [d for d in diffs if d[0] == "modify_default"] == [], diffs
