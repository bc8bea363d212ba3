"""The migration lock on SQLite (an flock on `<database>.migration-lock`) and MariaDB/MySQL
(`GET_LOCK`): a second runner names the holder and gives up with ExitCode.LOCKED, a killed
holder frees the lock, and simultaneous runners apply each revision once."""

from __future__ import annotations

import sys
import textwrap

import pytest
from sqlalchemy.engine import make_url

from tasks.core.environments import Environment
from tasks.core.errors import ExitCode
from tasks.guard.lock import migration_lock
from tests.conftest import ROOT, schema_snapshot
from tests.helpers import assert_ok, assert_one_line_error, sqlite_url, version_rows
from tests.revision_chains import counts, create_table, empty_chain, kill


def environment_for(url: str) -> Environment:
    return Environment("development", make_url(url), "DATABASE_URL_DEVELOPMENT", "test", False)


@pytest.fixture
def sqlite_dev(project):
    url = sqlite_url(project.tmp / "dev.sqlite3")
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("a40000000001", "one", create_table("one"))
    return url


def test_sqlite_second_runner_names_the_holder_and_gives_up(project, sqlite_dev):
    holder = "ops@example.com@laptop local.sync"

    with migration_lock(environment_for(sqlite_dev), label=holder, timeout=0):
        result = project.invoke("dev.upgrade", "--lock-timeout", "1")

    assert_one_line_error(result, ExitCode.LOCKED, holder)
    assert schema_snapshot(sqlite_dev) == {}
    assert_ok(project.invoke("dev.upgrade", "--lock-timeout", "0"))  # released on exit


def test_sqlite_lock_of_a_killed_holder_is_free(project, sqlite_dev):
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from tests.guard.test_lock_backends import environment_for
        from tasks.guard.lock import migration_lock
        with migration_lock(environment_for({sqlite_dev!r}), label="doomed", timeout=0):
            print("locked", flush=True)
            time.sleep(120)
        """
    )
    import subprocess

    holder = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        blocked = project.invoke("dev.upgrade", "--lock-timeout", "0")
        assert_one_line_error(blocked, ExitCode.LOCKED, "doomed")
    finally:
        kill(holder)

    assert_ok(project.invoke("dev.upgrade", "--lock-timeout", "0"))
    assert version_rows(schema_snapshot(sqlite_dev)) == ["a40000000001"]


def test_sqlite_simultaneous_runners_apply_each_revision_once(project, sqlite_dev):
    from tests.revision_chains import spawn

    runners = [spawn("dev.upgrade") for _ in range(4)]
    outputs = [runner.communicate(timeout=240) for runner in runners]

    for runner, (stdout, stderr) in zip(runners, outputs, strict=True):
        assert runner.returncode == 0, stdout + stderr
    assert counts(sqlite_dev) == {"a40000000001": 1}


@pytest.mark.mysql
def test_mariadb_second_runner_is_told_and_gives_up(project, mysql_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", mysql_url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("a50000000001", "one", create_table("one"))

    with migration_lock(environment_for(mysql_url), label="holder", timeout=0):
        result = project.invoke("dev.upgrade", "--lock-timeout", "1")
        line = assert_one_line_error(result, ExitCode.LOCKED, "migration lock still held by")
        assert "connection" in line and "root@" in line

    assert_ok(project.invoke("dev.upgrade", "--lock-timeout", "0"))
    assert counts(mysql_url) == {"a50000000001": 1}


@pytest.mark.mysql
def test_mariadb_lock_is_per_database(project, mysql_url, tmp_path):
    """Two databases on one server migrate independently."""
    other = make_url(mysql_url).set(database="information_schema")
    with migration_lock(environment_for(str(other)), label="elsewhere", timeout=0):
        project.setenv("DATABASE_URL_DEVELOPMENT", mysql_url)
        empty_chain(tmp_path / "scripts").use(project)
        assert_ok(project.invoke("dev.upgrade", "--lock-timeout", "0"))


CHANGING = [
    ("local.upgrade",),
    ("local.downgrade", "--rev", "base", "--yes"),
    ("local.stamp", "--rev", "head", "--yes"),
    ("local.sync",),
    ("local.reset", "--yes"),
    ("local.restore", "--file", "any.sqlite3", "--yes"),
]
READ_ONLY = [
    ("local.current",),
    ("local.plan",),
    ("local.check",),
    ("local.history",),
    ("local.upgrade", "--sql"),
]


@pytest.fixture
def local_locked(project):
    """The local SQLite database with its migration lock held by someone else."""
    url = sqlite_url(project.tmp / "local.sqlite3")
    project.setenv("DATABASE_URL_LOCAL", url)
    project.setenv("INVOKE_MIGRATIONS_LOCK_TIMEOUT", "0")
    with migration_lock(environment_for(url), label="someone else", timeout=0):
        yield url


@pytest.mark.parametrize("argv", CHANGING, ids=[argv[0] for argv in CHANGING])
def test_every_changing_task_takes_the_lock(project, local_locked, argv):
    result = project.invoke(*argv)

    assert_one_line_error(result, ExitCode.LOCKED, "someone else")


@pytest.mark.parametrize("argv", READ_ONLY, ids=[" ".join(argv) for argv in READ_ONLY])
def test_read_only_tasks_do_not_wait_for_the_lock(project, local_locked, argv):
    result = project.invoke(*argv)

    assert result.code != ExitCode.LOCKED, result.output
    assert "migration lock" not in result.output


def test_sqlite_hard_links_to_one_database_share_its_lock(project, tmp_path):
    """A hard link in another folder resolves to another lock file; the database file's own
    inode still makes the second runner wait (it ran and failed with 'database is locked')."""
    import os

    first = tmp_path / "a" / "app.sqlite3"
    first.parent.mkdir()
    first.write_bytes(b"")
    second = tmp_path / "b" / "app.sqlite3"
    second.parent.mkdir()
    os.link(first, second)

    with migration_lock(environment_for(sqlite_url(first)), label="first runner", timeout=0):
        project.setenv("DATABASE_URL_LOCAL", sqlite_url(second))
        empty_chain(tmp_path / "scripts").use(project)
        result = project.invoke("local.upgrade", "--lock-timeout", "0")

    assert_one_line_error(result, ExitCode.LOCKED, "migration lock")
    assert "alembic_version" not in schema_snapshot(sqlite_url(first))
