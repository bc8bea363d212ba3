"""Every "Bad input" bullet of the foundation issue: one line on stderr, the documented exit code,
no traceback, and the database exactly as it was (a real PostgreSQL database one revision behind
head, so both an upgrade and a downgrade would show)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import (
    FIRST,
    FakeTerminal,
    assert_one_line_error,
    copy_scripts,
    prepare,
    table_names,
    version_rows,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(project, pg_module_url):
    """A PostgreSQL database at the first revision, used by dev, staging and prod alike.

    One database serves the module; a test that changed it fails, and the next one finds it
    rebuilt, so no test depends on another."""
    url = pg_module_url
    for variable in ("DEVELOPMENT", "STAGING", "PRODUCTION"):
        project.setenv(f"DATABASE_URL_{variable}", url)
    before = schema_snapshot(url)
    if version_rows(before) != [FIRST] or table_names(before) != {"users", "projects"}:
        _empty(url)
        prepare(project, url, FIRST)
        before = schema_snapshot(url)
    _production_only_for_prod(project)
    yield url
    assert schema_snapshot(url) == before, "bad input changed the database"


def _production_only_for_prod(project) -> None:  # type: ignore[no-untyped-def]
    """A dev or staging change on production's database is refused before any input is judged
    (tests/guard/test_scope.py), so production's variable is set only while a `prod.` task runs."""
    invoke = project.invoke

    def invoke_own(*argv: str):  # type: ignore[no-untyped-def]
        saved = os.environ.get("DATABASE_URL_PRODUCTION")
        if saved is None or (argv and argv[0].startswith("prod.")):
            return invoke(*argv)
        project.monkeypatch.delenv("DATABASE_URL_PRODUCTION")
        try:
            return invoke(*argv)
        finally:
            project.setenv("DATABASE_URL_PRODUCTION", saved)

    project.monkeypatch.setattr(project, "invoke", invoke_own)


def _empty(url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("DROP SCHEMA public CASCADE"))
        connection.execute(sqlalchemy.text("CREATE SCHEMA public"))
    engine.dispose()


# --- unknown environment or flag (Invoke's parser) ---------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("qa.upgrade",),
        ("production.upgrade",),
        ("dev.upgrade", "--bogus"),
        ("dev.downgrade", "--rev"),
        ("prod.revision", "-m", "x"),
    ],
    ids=["unknown-collection", "environment-name-not-collection", "flag", "flag-value", "task"],
)
def test_unknown_environment_task_or_flag(project, db, argv):
    """Invoke's own parser answers these; the README documents its exit code, 1."""
    result = project.invoke(*argv)

    line = assert_one_line_error(result, ExitCode.FAILED)
    assert any(arg.lstrip("-") in line for arg in argv if len(arg) > 2), line


def test_plain_alembic_with_unknown_environment(project, db):
    project.setenv("ENVIRONMENT", "qa")

    result = project.run(sys.executable, "-m", "alembic", "upgrade", "head")

    assert result.code != 0
    assert "unknown environment 'qa'" in result.output
    assert "Traceback" not in result.output


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "variable"),
    [
        (("dev.upgrade",), "DATABASE_URL_DEVELOPMENT"),
        (("staging.upgrade",), "DATABASE_URL_STAGING"),
        (("prod.upgrade", "--yes"), "DATABASE_URL_PRODUCTION"),
        (("dev.downgrade", "--rev", "base", "--yes"), "DATABASE_URL_DEVELOPMENT"),
    ],
)
def test_missing_url_variable(project, db, argv, variable):
    project.monkeypatch.delenv(variable)

    result = project.invoke(*argv)

    assert_one_line_error(result, ExitCode.USAGE, variable, "not set")


@pytest.mark.parametrize("url", ["postgresql//no-colon", "postgresql://u:p@h:port/db"])
def test_malformed_url(project, db, url):
    project.setenv("DATABASE_URL_DEVELOPMENT", url)

    result = project.invoke("dev.upgrade")

    assert_one_line_error(result, ExitCode.USAGE, "DATABASE_URL_DEVELOPMENT", "not a valid")


def test_unreachable_host_gives_up_quickly_with_the_url_masked(project, db):
    project.setenv(
        "DATABASE_URL_DEVELOPMENT", "postgresql://postgres:hunter22pw@127.0.0.1:9/unreachable"
    )

    started = time.monotonic()
    result = project.invoke("dev.upgrade")
    elapsed = time.monotonic() - started

    line = assert_one_line_error(result, ExitCode.FAILED, "cannot connect", "127.0.0.1:9")
    assert elapsed < 15
    assert "postgres:***@" in line
    assert "hunter22pw" not in result.output


# --- revisions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("dev.upgrade", "--rev", "nosuchrev"),
        ("dev.upgrade", "--rev", "+5"),
        ("dev.downgrade", "--rev", "nosuchrev", "--yes"),
        ("dev.downgrade", "--rev", "-5", "--yes"),
        ("dev.stamp", "--rev", "nosuchrev", "--yes"),
        ("prod.upgrade", "--rev", "nosuchrev", "--yes"),
    ],
)
def test_unknown_revision(project, db, argv):
    result = project.invoke(*argv)

    line = assert_one_line_error(result, ExitCode.USAGE)
    assert argv[2] in line


@pytest.mark.parametrize("argv", [("dev.downgrade", "--yes"), ("dev.stamp", "--yes")])
def test_downgrade_and_stamp_need_an_explicit_revision(project, db, argv):
    result = project.invoke(*argv)

    assert_one_line_error(result, ExitCode.USAGE, "--rev")


def test_several_heads_when_the_target_is_head(project, db):
    scripts = copy_scripts(project.tmp / "scripts")
    scripts.add_branch()
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(scripts.ini))

    result = project.invoke("dev.upgrade")

    assert_one_line_error(result, ExitCode.USAGE, "head")
    assert "Multiple head" in result.stderr or "several heads" in result.stderr


# --- guards ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (("prod.upgrade",), "Upgrade production"),
        (("dev.stamp", "--rev", "base"), "Stamp development"),
    ],
)
def test_no_terminal_without_yes(project, db, argv, what):
    project.monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("y\nproduction\n"))

    result = project.invoke(*argv)

    assert_one_line_error(result, ExitCode.REFUSED, what, "--yes")


def test_no_terminal_without_yes_on_downgrade(project, db):
    project.monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("y\n"))

    result = project.invoke("dev.downgrade", "--rev", "base")

    assert_one_line_error(result, ExitCode.REFUSED, "Downgrade development", "--yes")


def test_no_terminal_without_yes_in_a_real_process(project, db):
    """stdin is a pipe carrying 'yes': piped input is not consent."""
    result = project.invoke_subprocess("prod.upgrade", input="production\nyes\ny\n")

    assert_one_line_error(result, ExitCode.REFUSED, "no terminal", "--yes")


@pytest.mark.parametrize(
    ("argv", "answer", "what"),
    [
        (("prod.upgrade",), "prod\n", "does not match"),
        (("prod.upgrade",), "Production\n", "does not match"),
        (("prod.upgrade",), "y\n", "does not match"),
        (("prod.upgrade",), "", "input closed"),
        (("dev.stamp", "--rev", "head"), "n\n", "not confirmed"),
        (("dev.stamp", "--rev", "head"), "\n", "not confirmed"),
        (("dev.stamp", "--rev", "head"), "yess\n", "not confirmed"),
    ],
)
def test_wrong_confirmation(project, db, argv, answer, what):
    project.monkeypatch.setattr(sys, "stdin", FakeTerminal(answer))

    result = project.invoke(*argv)

    assert_one_line_error(result, ExitCode.REFUSED, what)


def test_wrong_confirmation_on_downgrade(project, db):
    project.monkeypatch.setattr(sys, "stdin", FakeTerminal("n\n"))

    result = project.invoke("dev.downgrade", "--rev", "base")

    assert_one_line_error(result, ExitCode.REFUSED, "not confirmed")


@pytest.mark.parametrize(
    "argv",
    [
        ("dev.upgrade",),
        ("dev.downgrade", "--rev", "base", "--yes"),
        ("dev.stamp", "--rev", "head", "--yes"),
        ("staging.upgrade",),
        ("prod.upgrade", "--yes"),
    ],
)
def test_non_owner_when_owners_are_set(project, db, argv):
    project.setenv("INVOKE_MIGRATIONS_OWNERS", "a@x.example,b@y.example")
    project.setenv("MIGRATIONS_OPERATOR", "mallory@z.example")

    result = project.invoke(*argv)

    assert_one_line_error(
        result, ExitCode.REFUSED, "a@x.example", "b@y.example", "mallory@z.example"
    )
