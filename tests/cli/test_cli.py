"""What `invoke --list` and `invoke --help` show, what the read-only tasks print, and `--sql`
(offline mode: SQL on stdout, no connection opened)."""

from __future__ import annotations

import re

import pytest

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import (
    FIRST,
    HEAD,
    assert_ok,
    assert_one_line_error,
    sqlite_url,
    table_names,
    version_rows,
)

COLLECTIONS = ("local", "dev", "staging", "prod")
COMMON_TASKS = {"current", "history", "heads", "upgrade", "downgrade", "stamp", "check"}
EXPECTED = {
    "local": COMMON_TASKS | {"revision", "sync"},
    "dev": COMMON_TASKS | {"revision"},
    "staging": COMMON_TASKS,
    "prod": COMMON_TASKS,
}


def listed_tasks(output: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for match in re.finditer(r"^\s+(\w+)\.([\w-]+)\s", output, re.M):
        found.setdefault(match[1], set()).add(match[2])
    return found


def option_help(output: str) -> dict[str, str]:
    """`--flag` -> its help text, from the Options: section of `invoke --help TASK`."""
    _, _, options = output.partition("Options:")
    helps: dict[str, str] = {}
    current = None
    for line in options.splitlines():
        match = re.match(
            r"^\s+(?:-\w(?:\s\S+)?,\s+)?--(?:\[no-\])?([\w-]+)(?:\[?=\S+\]?)?\s{2,}(\S.*)?$", line
        )
        if match:
            current = match[1]
            helps[current] = (match[2] or "").strip()
        elif current and line.strip():
            helps[current] += " " + line.strip()
    return helps


def test_list_shows_the_four_collections_and_their_tasks(project):
    result = project.invoke("--list")

    assert_ok(result)
    listed = listed_tasks(result.stdout)
    assert set(COLLECTIONS) <= set(listed)
    for collection, tasks in EXPECTED.items():
        assert tasks <= listed[collection], collection
    assert "revision" not in listed["staging"] | listed["prod"]


@pytest.mark.parametrize("collection", ["staging", "prod"])
def test_shared_environments_have_no_revision_task(project, collection):
    result = project.invoke(f"{collection}.revision", "-m", "x")

    assert result.code != 0
    assert "No idea what" in result.stderr


def test_every_task_has_a_docstring_listed(project):
    result = project.invoke("--list")

    for line in result.stdout.splitlines():
        if re.match(r"^\s+\w+\.\w+", line):
            assert len(line.split()) > 1, f"task without a docstring: {line!r}"


def test_help_for_dev_upgrade_documents_every_flag(project):
    result = project.invoke("--help", "dev.upgrade")

    assert_ok(result)
    assert "Apply pending revisions" in result.stdout
    helps = option_help(result.stdout)
    assert {"rev", "sql", "yes"} <= set(helps)
    assert "head" in helps["rev"]
    assert "SQL" in helps["sql"] and "no connection" in helps["sql"]
    assert "confirmation" in helps["yes"]


@pytest.mark.parametrize(
    "task", [f"{c}.{t}" for c in COLLECTIONS for t in sorted(EXPECTED[c])], ids=str
)
def test_every_flag_of_every_task_has_help(project, task):
    result = project.invoke("--help", task)

    assert_ok(result)
    docstring = result.stdout.partition("Docstring:")[2].partition("Options:")[0]
    assert docstring.strip() and docstring.strip() != "none", result.stdout
    for flag, text in option_help(result.stdout).items():
        assert text, f"{task} --{flag} has no help"


# --- read-only tasks print something useful -------------------------------------------------


@pytest.fixture
def dev_at_first(project):
    path = project.tmp / "dev.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(path))
    assert_ok(project.invoke("dev.upgrade", "--rev", FIRST))
    return sqlite_url(path)


def test_current_reports_revision_and_distance_to_head(project, dev_at_first):
    result = project.invoke("dev.current")

    assert_ok(result)
    assert FIRST in result.stdout
    assert "behind head by 1" in result.stdout
    assert "(head)" not in result.stdout


def test_history_lists_revisions_with_current_marked(project, dev_at_first):
    """Alembic's `history` output must reach the console (it was silenced by `quiet`)."""
    result = project.invoke("dev.history")

    assert_ok(result)
    lines = result.stdout.splitlines()
    assert any(HEAD in line and "(head)" in line for line in lines), result.stdout
    assert any(FIRST in line and "(current)" in line for line in lines), result.stdout


def test_history_verbose(project, dev_at_first):
    result = project.invoke("dev.history", "--verbose")

    assert_ok(result)
    assert f"Rev: {HEAD} (head)" in result.stdout
    assert "add memberships" in result.stdout


def test_heads(project):
    result = project.invoke("dev.heads")

    assert_ok(result)
    assert HEAD in result.stdout and "(head)" in result.stdout


def test_check_exits_with_differences_code_when_behind(project, dev_at_first):
    before = schema_snapshot(dev_at_first)

    result = project.invoke("dev.check")

    assert result.code == ExitCode.DIFFERENCES, result.output
    assert "memberships" in result.stdout
    assert schema_snapshot(dev_at_first) == before


# --- --sql: offline mode --------------------------------------------------------------------


def test_sql_on_sqlite_opens_nothing(project):
    """A SQLite file that does not exist stays that way: no connection was made."""
    path = project.tmp / "never.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(path))

    result = project.invoke("dev.upgrade", "--sql")

    assert_ok(result)
    assert "CREATE TABLE users" in result.stdout
    assert "CREATE TABLE memberships" in result.stdout
    assert not path.exists()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "argv",
    [
        ("dev.upgrade", "--sql", "--rev", "base:head"),
        ("dev.upgrade", "--sql"),
        ("prod.upgrade", "--sql", "--rev", "base:head"),
    ],
)
def test_sql_with_an_unreachable_server_still_prints_sql(project, argv):
    for variable in ("DEVELOPMENT", "PRODUCTION"):
        project.setenv(f"DATABASE_URL_{variable}", "postgresql://postgres@127.0.0.1:9/nowhere")

    result = project.invoke(*argv)

    assert_ok(result)
    assert "CREATE TYPE user_role AS ENUM" in result.stdout  # PostgreSQL dialect
    assert "CREATE TABLE memberships" in result.stdout
    assert "INSERT INTO alembic_version" in result.stdout


def test_sql_downgrade_range(project):
    path = project.tmp / "never.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(path))

    result = project.invoke("dev.downgrade", "--sql", "--rev", f"{HEAD}:{FIRST}")

    assert_ok(result)
    assert "DROP TABLE memberships" in result.stdout
    assert "users" not in result.stdout.replace("memberships_user_id_users", "")
    assert not path.exists()


def test_sql_downgrade_without_a_range_is_a_usage_error(project):
    path = project.tmp / "never.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(path))

    result = project.invoke("dev.downgrade", "--sql", "--rev", "-1")

    assert_one_line_error(result, ExitCode.USAGE)
    assert not path.exists()


def test_sql_stamp(project):
    path = project.tmp / "never.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(path))

    result = project.invoke("dev.stamp", "--sql", "--rev", HEAD)

    assert_ok(result)
    assert HEAD in result.stdout
    assert not path.exists()


def test_sql_changes_nothing_on_a_live_database(project, dev_at_first):
    before = schema_snapshot(dev_at_first)

    result = project.invoke("dev.upgrade", "--sql", "--rev", f"{FIRST}:head")

    assert_ok(result)
    assert "CREATE TABLE memberships" in result.stdout
    assert "CREATE TABLE users" not in result.stdout
    after = schema_snapshot(dev_at_first)
    assert after == before
    assert version_rows(after) == [FIRST]
    assert "memberships" not in table_names(after)
