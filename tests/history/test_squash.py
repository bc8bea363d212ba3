"""`dev.squash -r REV`: root..REV becomes one baseline keeping REV's id, proven equal on every
ci dialect before anything is written; databases at or past REV upgrade on as before, a database
behind REV is named and the squash refused."""

from __future__ import annotations

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tasks.squash.snapshot import snapshot
from tests.conftest import MYSQL_ADMIN_URL
from tests.helpers import assert_ok, assert_one_line_error
from tests.revision_chains import (
    Chain,
    create_table,
    empty_chain,
    long_history,
    repository_chain,
)

REPOSITORY_HEAD = "ef2b2790809e"


def schema_of(url: str) -> dict:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return snapshot(connection)
    finally:
        engine.dispose()


def files(chain: Chain) -> set[str]:
    return chain.scripts.files()


def dialects(project, dev_on_both: str) -> None:  # type: ignore[no-untyped-def]
    """Squash proves on the dialect of the database under test (and SQLite beside PostgreSQL)."""
    both = "sqlite,postgresql" if dev_on_both.startswith("postgresql") else "sqlite"
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", both)


def test_the_repository_history_squashes_and_databases_at_its_head_need_nothing(
    project, dev_on_both
):
    chain = repository_chain(project.tmp / "scripts").use(project)
    dialects(project, dev_on_both)
    assert_ok(project.invoke("dev.upgrade"))
    assert_ok(project.invoke("dev.checksums", "--write"))
    before = schema_of(dev_on_both)

    result = project.invoke("dev.squash", "-r", REPOSITORY_HEAD)

    assert_ok(result)
    assert files(chain) == {f"{REPOSITORY_HEAD}_squashed_baseline.py"}
    assert "proven on" in result.stdout
    again = project.invoke("dev.upgrade")  # the recorded checksum was the replaced revision's
    assert_ok(again)
    assert "nothing to upgrade" in again.stdout
    assert_ok(project.invoke("dev.preflight"))
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{project.tmp / 'fresh.sqlite3'}")
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    assert_ok(project.invoke("ci.check"))  # checksums.json follows the squash; lint passes
    if dev_on_both.startswith("sqlite"):
        assert_ok(project.invoke("dev.upgrade"))
        assert schema_of(f"sqlite:///{project.tmp / 'fresh.sqlite3'}") == before


def test_a_long_history_squashes_and_later_revisions_keep_working(project, dev_on_both):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    ids = long_history(chain, 40)
    dialects(project, dev_on_both)
    squash_at = ids[29]
    assert_ok(project.invoke("dev.upgrade", "--rev", squash_at))  # a database at REV

    result = project.invoke("dev.squash", "-r", squash_at)

    assert_ok(result)
    assert f'{ids[4]}: op.execute("INSERT INTO t0000' in result.stdout  # listed for review
    baseline = chain.scripts.versions / f"{squash_at}_squashed_baseline.py"
    assert "Not replayed on fresh databases" in baseline.read_text()
    assert len(files(chain)) == 1 + 10
    assert_ok(project.invoke("dev.upgrade"))  # on past REV through the unchanged revisions
    upgraded = schema_of(dev_on_both)
    fresh = f"sqlite:///{project.tmp / 'fresh.sqlite3'}"
    if dev_on_both.startswith("postgresql"):
        fresh = dev_on_both.rsplit("/", 1)[0] + "/" + dev_on_both.rsplit("/", 1)[1] + "_fresh"
        _create_pg(fresh)
    try:
        project.setenv("DATABASE_URL_DEVELOPMENT", fresh)
        assert_ok(project.invoke("dev.upgrade"))  # base -> baseline -> later revisions
        assert schema_of(fresh) == upgraded
        assert_ok(project.invoke("dev.downgrade", "--rev", "base", "--yes"))
        assert schema_of(fresh)["tables"] == {}
    finally:
        if fresh.startswith("postgresql"):
            _drop_pg(fresh)


def test_a_database_behind_rev_is_named_and_the_squash_refused(project, dev_on_both):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    ids = long_history(chain, 12)
    dialects(project, dev_on_both)
    assert_ok(project.invoke("dev.upgrade", "--rev", ids[5]))
    before = files(chain)

    result = project.invoke("dev.squash", "-r", ids[9])

    assert_one_line_error(
        result, ExitCode.REFUSED, "environment development", f"at {ids[5]}", "--force"
    )
    assert files(chain) == before
    forced = project.invoke("dev.squash", "-r", ids[9], "--force")
    assert_ok(forced)
    text = (chain.scripts.versions / f"{ids[9]}_squashed_baseline.py").read_text()
    assert "WARNING: squashed with --force" in text and ids[5] in text


def test_what_the_baseline_cannot_rebuild_is_printed_and_nothing_written(project, sqlite_url):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    chain.add(
        "s00000000001", "table", 'op.create_table("t", sa.Column("id", sa.Integer))', record=False
    )
    chain.add(
        "s00000000002",
        "a trigger",
        'op.execute("CREATE TRIGGER t_audit AFTER INSERT ON t BEGIN SELECT 1; END")',
        'op.execute("DROP TRIGGER t_audit")',
        record=False,
    )
    before = files(chain)

    result = project.invoke("dev.squash", "-r", "s00000000002")

    assert_one_line_error(result, ExitCode.SQUASH_UNPROVEN, "triggers", "nothing written")
    assert "t_audit" in result.stdout
    assert files(chain) == before


def test_a_revision_hanging_off_the_middle_of_the_range_is_refused(project):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    ids = long_history(chain, 6)
    chain.add("b00000000001", "a branch", down_revision=ids[2], record=False)
    before = files(chain)

    result = project.invoke("dev.squash", "-r", ids[5])

    assert_one_line_error(result, ExitCode.USAGE, "b00000000001", ids[2])
    assert files(chain) == before


def test_a_merge_inside_the_range_is_squashed_and_dry_run_writes_nothing(project):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    for revision, message, table in [("m00000000001", "root", "a"), ("m00000000002", "left", "b")]:
        chain.add(revision, message, create_table(table), record=False)
    chain.add(
        "m00000000003",
        "right",
        create_table("c"),
        down_revision="m00000000001",
        record=False,
    )
    chain.scripts.add_merge("m00000000004", ("m00000000002", "m00000000003"), "merge")
    before = files(chain)

    dry = project.invoke("dev.squash", "-r", "m00000000004", "--dry-run")
    assert_ok(dry)
    assert "nothing written" in dry.stdout and files(chain) == before

    assert_ok(project.invoke("dev.squash", "-r", "m00000000004"))
    assert files(chain) == {"m00000000004_squashed_baseline.py"}


def _create_pg(url: str) -> None:
    admin, name = url.rsplit("/", 1)
    engine = sqlalchemy.create_engine(admin + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def _drop_pg(url: str) -> None:
    admin, name = url.rsplit("/", 1)
    engine = sqlalchemy.create_engine(admin + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.mark.mysql
def test_on_mariadb_the_baseline_is_proven_and_a_database_at_rev_upgrades_on(project, mysql_url):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    ids = long_history(chain, 20)
    project.setenv("DATABASE_URL_DEVELOPMENT", mysql_url)
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "mysql")
    project.setenv("INVOKE_MIGRATIONS_CI_MYSQL_URL", MYSQL_ADMIN_URL)
    assert_ok(project.invoke("dev.upgrade", "--rev", ids[14]))

    result = project.invoke("dev.squash", "-r", ids[14])

    assert_ok(result)
    assert "proven on mysql" in result.stdout
    assert_ok(project.invoke("dev.upgrade"))
    checked = project.invoke("ci.check")  # a throwaway MariaDB database (the models differ:
    assert "ok     stairway: mysql: 6 revisions" in checked.stdout  # not this synthetic chain)
    assert f"revision {ids[14]}" not in checked.output  # the baseline lints clean
