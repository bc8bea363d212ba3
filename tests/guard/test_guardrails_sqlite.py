"""The protected upgrade on SQLite: a batch revision (a table rebuild that reflects its table, so
it has no offline SQL) is rehearsed on a copy for the plan, refused with --yes alone and applied
with --allow-destructive after a backup of the file."""

from __future__ import annotations

import sqlite3

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, assert_one_line_error, sqlite_url, version_rows
from tests.plan.test_plan import ACCOUNTS, BATCH_DROP
from tests.revision_chains import empty_chain


def prepared(project):  # type: ignore[no-untyped-def]
    url = sqlite_url(project.tmp / "prod.sqlite3")
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("a70000000001", "accounts", ACCOUNTS, record=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    assert_ok(project.invoke("dev.upgrade"))
    project.setenv("DATABASE_URL_PRODUCTION", url)
    chain.add("a70000000002", "batch drop legacy", BATCH_DROP, record=False)
    return url, chain


def test_a_batch_rebuild_is_refused_with_yes_alone(project):
    url, chain = prepared(project)
    before = schema_snapshot(url)

    result = project.invoke("prod.upgrade", "--yes")

    assert_one_line_error(result, ExitCode.REFUSED, f"{chain.head}:table-rebuild")
    assert "_alembic_tmp_accounts" in result.stdout  # the rehearsed SQL is in the plan
    assert schema_snapshot(url) == before
    assert not project.backup_dir.exists() or not list(project.backup_dir.iterdir())


def test_a_batch_rebuild_applies_with_allow_destructive_after_a_backup(project):
    url, chain = prepared(project)

    result = project.invoke("prod.upgrade", "--yes", "--allow-destructive")

    assert_ok(result)
    snapshot = schema_snapshot(url)
    assert version_rows(snapshot) == [chain.head]
    assert "legacy" not in [column[0] for column in snapshot["accounts"]["columns"]]
    (backup,) = list(project.backup_dir.glob("*.sqlite3"))
    with sqlite3.connect(backup) as copy:
        columns = [row[1] for row in copy.execute("PRAGMA table_info(accounts)")]
    assert "legacy" in columns  # taken before the rebuild
