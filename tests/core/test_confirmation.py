"""Confirmations through a real pseudo-terminal: y/N for downgrade and stamp anywhere, the typed
environment name for an upgrade of production, --yes for scripts, and refusal without a TTY."""

from __future__ import annotations

import pexpect
import pytest

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import (
    FIRST,
    HEAD,
    assert_ok,
    assert_one_line_error,
    prepare,
    sqlite_url,
    table_names,
    terminal,
    version_rows,
)

YES_NO = r"Continue\? \[y/N\] "
TYPE_PRODUCTION = r"Type 'production' to continue: "


class Terminal:
    """`invoke ARGV...` on a pseudo-terminal from the repository root."""

    def __init__(self, *argv: str) -> None:
        self.child = terminal(*argv)
        self.transcript = ""

    def expect(self, pattern: str) -> str:
        self.child.expect(pattern)
        self.transcript += self.child.before + self.child.after
        return self.child.before

    def answer(self, text: str) -> None:
        self.child.sendline(text)

    def finish(self) -> int:
        self.child.expect(pexpect.EOF)
        self.transcript += self.child.before
        self.child.close()
        return self.child.exitstatus


@pytest.fixture
def dev(project):
    """A development SQLite file at head."""
    path = project.tmp / "dev.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(path))
    assert_ok(project.invoke("dev.upgrade"))
    return sqlite_url(path)


@pytest.fixture
def prod(project):
    """A production SQLite file one revision behind head."""
    url = prepare(project, sqlite_url(project.tmp / "prod.sqlite3"), FIRST)
    project.setenv("DATABASE_URL_PRODUCTION", url)
    return url


# --- y/N: downgrade and stamp ---------------------------------------------------------------


@pytest.mark.parametrize("answer", ["y", "Yes"])
def test_dev_downgrade_proceeds_on_yes(project, dev, answer):
    terminal = Terminal("dev.downgrade", "--rev", "-1")
    shown = terminal.expect(YES_NO)
    assert "Downgrade development" in shown and HEAD in shown
    assert "lose" in shown  # the data-loss warning comes before the question
    terminal.answer(answer)

    assert terminal.finish() == 0, terminal.transcript
    snapshot = schema_snapshot(dev)
    assert version_rows(snapshot) == [FIRST]
    assert "memberships" not in table_names(snapshot)


@pytest.mark.parametrize("answer", ["n", "", "sure"])
def test_dev_downgrade_declined_changes_nothing(project, dev, answer):
    before = schema_snapshot(dev)
    terminal = Terminal("dev.downgrade", "--rev", "base")
    terminal.expect(YES_NO)
    terminal.answer(answer)

    assert terminal.finish() == ExitCode.REFUSED, terminal.transcript
    assert "not confirmed" in terminal.transcript
    assert "Traceback" not in terminal.transcript
    assert schema_snapshot(dev) == before


def test_end_of_input_at_the_prompt_changes_nothing(project, dev):
    before = schema_snapshot(dev)
    terminal = Terminal("dev.downgrade", "--rev", "base")
    terminal.expect(YES_NO)
    terminal.child.sendeof()

    assert terminal.finish() == ExitCode.REFUSED, terminal.transcript
    assert "Traceback" not in terminal.transcript
    assert schema_snapshot(dev) == before


def test_dev_stamp_asks_and_proceeds_on_yes(project, dev):
    terminal = Terminal("dev.stamp", "--rev", FIRST)
    assert "Stamp development" in terminal.expect(YES_NO)
    terminal.answer("y")

    assert terminal.finish() == 0, terminal.transcript
    snapshot = schema_snapshot(dev)
    assert version_rows(snapshot) == [FIRST]
    assert "memberships" in table_names(snapshot)  # stamp runs nothing


def test_dev_stamp_declined_changes_nothing(project, dev):
    before = schema_snapshot(dev)
    terminal = Terminal("dev.stamp", "--rev", "base")
    terminal.expect(YES_NO)
    terminal.answer("N")

    assert terminal.finish() == ExitCode.REFUSED, terminal.transcript
    assert schema_snapshot(dev) == before


def test_unprotected_upgrade_does_not_ask(project):
    path = project.tmp / "fresh.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(path))

    terminal = Terminal("dev.upgrade")

    assert terminal.finish() == 0, terminal.transcript
    assert "Continue?" not in terminal.transcript and "Type '" not in terminal.transcript
    assert version_rows(schema_snapshot(sqlite_url(path))) == [HEAD]


# --- typed name: production -----------------------------------------------------------------


@pytest.mark.parametrize("word", ["prod", "PRODUCTION", "y"])
def test_prod_upgrade_wrong_word_aborts(project, prod, word):
    before = schema_snapshot(prod)
    terminal = Terminal("prod.upgrade")
    shown = terminal.expect(TYPE_PRODUCTION)
    assert "Upgrade production" in shown and HEAD in shown
    terminal.answer(word)

    assert terminal.finish() == ExitCode.REFUSED, terminal.transcript
    assert "does not match" in terminal.transcript
    assert schema_snapshot(prod) == before


def test_prod_upgrade_right_word_proceeds(project, prod):
    terminal = Terminal("prod.upgrade")
    terminal.expect(TYPE_PRODUCTION)
    terminal.answer("production")

    assert terminal.finish() == 0, terminal.transcript
    assert version_rows(schema_snapshot(prod)) == [HEAD]


def test_prod_downgrade_also_asks_for_the_name(project, prod):
    before = schema_snapshot(prod)
    terminal = Terminal("prod.downgrade", "--rev", "base")
    terminal.expect(TYPE_PRODUCTION)
    terminal.answer("y")

    assert terminal.finish() == ExitCode.REFUSED, terminal.transcript
    assert schema_snapshot(prod) == before


@pytest.mark.postgres
def test_prod_upgrade_on_postgresql(project, pg_url):
    project.setenv("DATABASE_URL_PRODUCTION", pg_url)
    terminal = Terminal("prod.upgrade")
    terminal.expect(TYPE_PRODUCTION)
    terminal.answer("production")

    assert terminal.finish() == 0, terminal.transcript
    assert version_rows(schema_snapshot(pg_url)) == [HEAD]


# --- --yes and no terminal ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("prod.upgrade", "--yes"), HEAD),
        (("prod.downgrade", "--rev", "base", "--yes"), None),
        (("prod.stamp", "--rev", HEAD, "--yes"), HEAD),
    ],
)
def test_yes_skips_the_prompt(project, prod, argv, expected):
    terminal = Terminal(*argv)

    assert terminal.finish() == 0, terminal.transcript
    assert "Type '" not in terminal.transcript and "Continue?" not in terminal.transcript
    assert version_rows(schema_snapshot(prod)) == ([expected] if expected else [])


@pytest.mark.parametrize(
    "argv",
    [("prod.upgrade",), ("dev.stamp", "--rev", "base"), ("dev.downgrade", "--rev", "base")],
)
def test_piped_stdin_without_yes_refuses(project, dev, prod, argv):
    before = schema_snapshot(dev), schema_snapshot(prod)

    result = project.invoke_subprocess(*argv, input="y\nproduction\n")

    assert result.code == ExitCode.REFUSED, result.output
    assert "--yes" in result.stderr and "Traceback" not in result.output
    assert (schema_snapshot(dev), schema_snapshot(prod)) == before


def test_piped_stdin_with_yes_proceeds(project, prod):
    result = project.invoke_subprocess("prod.upgrade", "--yes", input="")

    assert_ok(result)
    assert version_rows(schema_snapshot(prod)) == [HEAD]


def test_closed_stdin_without_yes_refuses(project, prod):
    before = schema_snapshot(prod)

    result = project.invoke_subprocess("prod.upgrade", input="")

    assert_one_line_error(result, ExitCode.REFUSED, "--yes")
    assert schema_snapshot(prod) == before
