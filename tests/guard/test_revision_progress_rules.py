"""Which statements commit on their own (tasks.guard.revision_progress): those are the ones the
lock is checked before and that a revision's progress row records. Unknown statements count as
committing (fail closed)."""

from __future__ import annotations

import pytest
import sqlalchemy

from tasks.guard.revision_progress import commits_on_its_own


@pytest.fixture
def connection():  # type: ignore[no-untyped-def]
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as connection:
        yield connection
    engine.dispose()


@pytest.mark.parametrize(
    ("statement", "commits"),
    [
        ("CREATE TABLE t (id int)", True),
        ("ALTER TABLE t ADD COLUMN x int", True),
        ("/* a comment */ DROP INDEX ix ON t", True),
        ("LOCK TABLES t WRITE", True),
        ("CALL refresh()", True),
        ("SET autocommit = 1", True),
        ("something nobody knows", True),
        ("INSERT INTO t VALUES (1)", False),
        ("  -- why\n  update t set x = 1", False),
        ("(SELECT 1) UNION (SELECT 2)", False),
        ("SET SESSION innodb_lock_wait_timeout = 600", False),
        ("DELETE t FROM t JOIN u ON u.id = t.id", False),
    ],
)
def test_mysql(connection, statement: str, commits: bool) -> None:
    assert commits_on_its_own("mariadb", connection, statement) is commits
    assert commits_on_its_own("mysql", connection, statement) is commits


def test_postgresql_commits_in_autocommit_mode_or_on_commit(connection) -> None:
    assert not commits_on_its_own("postgresql", connection, "CREATE INDEX ix ON t (x)")
    assert commits_on_its_own("postgresql", connection, "COMMIT")
    assert commits_on_its_own("postgresql", connection, "end")
    connection.execution_options(isolation_level="AUTOCOMMIT")
    assert commits_on_its_own("postgresql", connection, "CREATE INDEX CONCURRENTLY ix ON t (x)")
    assert commits_on_its_own("postgresql", connection, "SELECT 1")


def test_sqlite_never(connection) -> None:
    assert not commits_on_its_own("sqlite", connection, "CREATE TABLE t (id int)")
