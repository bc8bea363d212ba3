"""Dialect quirks that made sync, check and autogenerate report differences that are not there,
each on the real server: MariaDB's `current_timestamp()` for `now()` and DOUBLE for
`Float(53)`, SQLite's unreflectable `Identity` and expression/DESC indexes. A second
`local.sync` right after the first must say "in sync" on every dialect, and a difference sync
cannot model must be reported, never crash (issue 8, items 5 and 6).

The models the tasks see come from this module through INVOKE_MIGRATIONS_METADATA.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
)

from tests.conftest import schema_snapshot
from tests.helpers import assert_one_line_error


def _events(metadata: MetaData, *, name_length: int = 50, expression_index: bool = True) -> Table:
    table = Table(
        "events",
        metadata,
        Column("id", Integer, Identity(), primary_key=True),
        Column("name", String(name_length), nullable=False),
        Column("created_at", DateTime, server_default=func.now(), nullable=False),
        Column("ratio", Float(precision=53)),
    )
    Index("ix_events_created_at_desc", table.c.created_at.desc())
    if expression_index:  # MariaDB has no expression indexes
        Index("ix_events_lower_name", func.lower(table.c.name))
    return table


def models__quirks() -> MetaData:
    metadata = MetaData()
    _events(metadata)
    return metadata


def models__quirks_mariadb() -> MetaData:
    metadata = MetaData()
    _events(metadata, expression_index=False)
    return metadata


def models__quirks_longer_name() -> MetaData:
    """The same table with one real change: `name` is longer in the models."""
    metadata = MetaData()
    _events(metadata, name_length=80, expression_index=False)
    return metadata


def database__quirks_with_old_name() -> MetaData:
    metadata = MetaData()
    _events(metadata, expression_index=False)
    return metadata


def models__quirks_plus_table() -> MetaData:
    metadata = MetaData()
    _events(metadata, expression_index=False)
    Table("notes", metadata, Column("id", Integer, primary_key=True), Column("body", String(200)))
    return metadata


def create_database(url: str, metadata: MetaData) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            metadata.create_all(connection)
    finally:
        engine.dispose()


def use(project, url: str, models: str) -> None:
    project.setenv("DATABASE_URL_LOCAL", url)
    project.setenv(
        "INVOKE_MIGRATIONS_METADATA", f"tests.schema.test_sync_dialects:models__{models}"
    )


def quirks_for(url: str) -> str:
    return "quirks_mariadb" if url.startswith("mysql") else "quirks"


def test_sync_from_empty_then_a_second_sync_says_in_sync(project, any_url):
    use(project, any_url, quirks_for(any_url))

    first = project.invoke_alone("local.sync")
    assert first.code == 0, first.output
    assert "in sync with the models" in first.stdout
    assert "did not converge" not in first.output

    second = project.invoke_alone("local.sync")
    assert second.code == 0, second.output
    assert "in sync with the models" in second.stdout
    assert "applied" not in second.stdout
    check = project.invoke_alone("local.sync", "--check")
    assert check.code == 0, check.output


def test_a_database_built_from_the_models_is_in_sync(project, any_url):
    """create_all's own DDL: what the team's app would have built."""
    models = quirks_for(any_url)
    create_database(any_url, globals()[f"models__{models}"]())
    use(project, any_url, models)

    check = project.invoke_alone("local.sync", "--check")

    assert check.code == 0, check.output
    assert "in sync with the models" in check.stdout


def test_sync_adds_a_table_next_to_the_quirks_and_commits(project, any_url):
    create_database(any_url, models__quirks_mariadb())
    use(project, any_url, "quirks_plus_table")

    synced = project.invoke_alone("local.sync")

    assert synced.code == 0, synced.output
    assert "+ applied: table notes" in synced.stdout
    assert "notes" in schema_snapshot(any_url)
    assert project.invoke_alone("local.sync", "--check").code == 0


def test_a_real_change_on_a_table_alembic_compares_is_reported_not_a_crash(project, any_url):
    """The identity column hands the table to Alembic, whose diff carries no model column:
    describing it crashed with `'NoneType' object has no attribute 'type'`."""
    create_database(any_url, database__quirks_with_old_name())
    use(project, any_url, "quirks_longer_name")
    before = schema_snapshot(any_url)

    for argv in (("local.sync", "--check"), ("local.sync",)):
        result = project.invoke(*argv)
        assert result.code == 5, result.output
        assert "Traceback" not in result.output
        assert "has no attribute" not in result.output
        assert "type of events.name: VARCHAR(50) -> VARCHAR(80)" in result.stdout
        assert "op.alter_column('events', 'name', type_=sa.String(length=80))" in result.stdout
    assert schema_snapshot(any_url) == before


@pytest.mark.mysql
def test_mariadb_now_and_double_are_not_differences(project, mysql_url):
    """The two MariaDB quirks, seen by `check` (Alembic's comparison) as well as by sync."""
    create_database(mysql_url, models__quirks_mariadb())
    engine = sa.create_engine(mysql_url)
    try:
        with engine.connect() as connection:
            columns = {c["name"]: c for c in sa.inspect(connection).get_columns("events")}
    finally:
        engine.dispose()
    assert "current_timestamp" in str(columns["created_at"]["default"]).lower()
    assert "DOUBLE" in str(columns["ratio"]["type"]).upper()
    project.setenv("DATABASE_URL_DEVELOPMENT", mysql_url)
    project.setenv(
        "INVOKE_MIGRATIONS_METADATA", "tests.schema.test_sync_dialects:models__quirks_mariadb"
    )

    checked = project.invoke("dev.check")

    assert checked.code == 0, checked.output
    assert "models and database match" in checked.stdout
    use(project, mysql_url, "quirks_mariadb")
    assert project.invoke_alone("local.sync", "--check").code == 0


def test_a_failing_create_names_its_statement_not_every_table(project, pg_url):
    """Among many new tables, the error names the CREATE TABLE that failed."""
    create_database(pg_url, MetaData())
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as connection:  # a type named like a table blocks that one table
            connection.execute(sa.text("CREATE TYPE notes AS (x int)"))
    finally:
        engine.dispose()
    use(project, pg_url, "quirks_plus_table")

    synced = project.invoke_alone("local.sync")

    line = assert_one_line_error(synced, 1, "failed at CREATE TABLE notes")
    assert "events" not in line
    assert "nothing was changed (rolled back)" in line
    assert set(schema_snapshot(pg_url)) == set()


def test_changes_without_their_model_are_described_and_left_for_a_revision():
    """The class of the crash: whatever a change lacks, describing it never raises and sync
    never applies what it cannot model."""
    from sqlalchemy.dialects import sqlite

    from tasks.schema.fast_diff import Change
    from tasks.schema.sync import group

    changes = [
        Change("modify_type", "events", "name", before="VARCHAR(50)", after="VARCHAR(80)"),
        Change("modify_default", "events", "created_at", before="now()", after=None),
        Change("add_fk", "events", "fk_events_owner"),  # no signature, no model
    ]

    items = group(changes, sqlite.dialect())

    assert [item.can_apply for item in items] == [False, False, False]
    details = [item.detail for item in items]
    assert "type of events.name: VARCHAR(50) -> VARCHAR(80)" in details
    assert "add_fk events.fk_events_owner" in details


def test_autogenerate_writes_no_revision_for_the_quirks(project, any_url, tmp_path):
    """env.py compares under the same rules: no revision of false positives."""
    from tests.helpers import copy_scripts

    models = quirks_for(any_url)
    create_database(any_url, globals()[f"models__{models}"]())
    copy = copy_scripts(tmp_path / "scripts")
    for revision in copy.versions.glob("*.py"):
        revision.unlink()
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv(
        "INVOKE_MIGRATIONS_METADATA", f"tests.schema.test_sync_dialects:models__{models}"
    )
    project.setenv("DATABASE_URL_DEVELOPMENT", any_url)

    result = project.invoke("dev.revision", "-m", "nothing", "--autogenerate", "--against-database")

    assert result.code == 0, result.output
    assert "no revision written" in result.stdout
    assert copy.files() == set()
