"""The indexes `local.sync` creates with a new table are the ones the comparison knows (issue 17).

- A same-named index declared twice (Prefect: `index=True` under a naming convention that
  gives `ix_artifact__key`, and an explicit `Index("ix_artifact__key", "key")`): Alembic keys
  the models' indexes by name, so `check` sees one index; `metadata.create_all` emits both and
  fails (`relation "ix_artifact__key" already exists`). Sync creates it once.
- An index the team ignores (`compare.ignore: add_index:NAME`, e.g. mlflow's column-less
  `Index("index_trace_tags_request_id")`, which no database accepts): check never reports it,
  so sync leaves it out of the new table instead of failing on it.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import Column, Index, Integer, MetaData, String, Table

from tasks.core.errors import ExitCode

CONVENTION = {"ix": "ix_%(table_name)s__%(column_0_N_name)s"}


def models__duplicate() -> MetaData:
    metadata = MetaData(naming_convention=CONVENTION)
    artifact = Table(
        "artifact",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("key", String(50), index=True),
        Column("type", String(50)),
    )
    Index("ix_artifact__key", artifact.c.key)
    return metadata


def models__columnless() -> MetaData:
    metadata = MetaData()
    Table(
        "trace_tags",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("request_id", String(50), nullable=False),
        Index("index_trace_tags_request_id"),  # mlflow's own: no column
        Index("ix_trace_tags_request", "request_id"),
    )
    return metadata


def _synced_twice(project, url: str, models: str) -> None:
    project.setenv("DATABASE_URL_LOCAL", url)
    project.setenv(
        "INVOKE_MIGRATIONS_METADATA", f"tests.schema.test_sync_new_table_indexes:{models}"
    )
    first = project.invoke_alone("local.sync")
    assert first.code == 0, first.output
    assert "in sync with the models" in first.stdout
    check = project.invoke_alone("local.sync", "--check")
    assert check.code == ExitCode.OK, check.output
    second = project.invoke_alone("local.sync")
    assert second.code == 0, second.output
    assert "applied" not in second.stdout


def _indexes(url: str, table: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sorted(str(index["name"]) for index in sa.inspect(engine).get_indexes(table))
    finally:
        engine.dispose()


def test_create_all_itself_fails_on_a_duplicated_index_name(any_url):
    """The trap is real: the models' own create_all cannot build them."""
    engine = sa.create_engine(any_url)
    try:
        with pytest.raises(sa.exc.DatabaseError), engine.begin() as connection:
            models__duplicate().create_all(connection)
    finally:
        engine.dispose()


def test_sync_creates_a_twice_declared_index_once_and_converges(project, any_url):
    _synced_twice(project, any_url, "models__duplicate")
    assert _indexes(any_url, "artifact") == ["ix_artifact__key"]


def test_sync_leaves_an_ignored_index_out_of_a_new_table(project, any_url):
    project.setenv("INVOKE_MIGRATIONS_COMPARE_IGNORE", "add_index:index_trace_tags_request_id")
    _synced_twice(project, any_url, "models__columnless")
    assert _indexes(any_url, "trace_tags") == ["ix_trace_tags_request"]
