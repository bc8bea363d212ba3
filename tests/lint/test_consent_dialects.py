"""Operations judged by what they render to on each dialect: a column rename is a `CHANGE` on
MariaDB (and refused like any rename), a nullable column is safe everywhere, and a SQLite batch
operation is a table rebuild."""

from __future__ import annotations

import json

import pytest

from tests.helpers import assert_ok, sqlite_url
from tests.revision_chains import empty_chain

ACCOUNTS = """
op.create_table(
    "accounts",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=True),
)
"""
RENAME = (
    'op.alter_column("accounts", "name", new_column_name="full_name", '
    "existing_type=sa.String(50), existing_nullable=True)"
)
NULLABLE = 'op.add_column("accounts", sa.Column("nickname", sa.Text, nullable=True))'


def planned(project, url: str, body: str) -> dict:  # type: ignore[no-untyped-def]
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("b00000000001", "accounts", ACCOUNTS, record=False)
    assert_ok(project.invoke("dev.upgrade"))
    chain.add("b00000000002", "change", body, record=False)
    result = project.invoke("dev.plan", "--json")
    assert_ok(result)
    (item,) = json.loads(result.stdout)["revisions"]
    return item


def consent(item: dict) -> list[tuple[str, str]]:
    return [
        (finding["rule"], finding["statement"])
        for finding in item["findings"]
        if finding["severity"] in {"destructive", "blocking"}
    ]


@pytest.mark.mysql
def test_a_rename_rendered_as_change_on_mariadb_is_refused(project, mysql_url):
    item = planned(project, mysql_url, RENAME)
    assert consent(item) == [
        ("change-column-type", "ALTER TABLE accounts CHANGE name full_name VARCHAR(50) NULL")
    ]


@pytest.mark.mysql
def test_a_nullable_column_on_mariadb_passes(project, mysql_url):
    assert consent(planned(project, mysql_url, NULLABLE)) == []


def test_a_nullable_column_on_sqlite_passes(project):
    assert consent(planned(project, sqlite_url(project.tmp / "dev.sqlite3"), NULLABLE)) == []


BATCH_RENAME = """
with op.batch_alter_table("accounts", recreate="always") as batch_op:
    batch_op.alter_column("name", new_column_name="full_name", existing_type=sa.String(50))
"""


def test_a_sqlite_batch_rename_is_a_table_rebuild(project):
    item = planned(project, sqlite_url(project.tmp / "dev.sqlite3"), BATCH_RENAME)
    assert [rule for rule, _ in consent(item)] == ["table-rebuild"]
