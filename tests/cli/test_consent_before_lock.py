"""Issue 18.7: a prompt holds nothing. The operator is asked before the migration lock is
taken; under the lock the database is read again, and an answer given to a plan that no longer
holds applies nothing."""

from __future__ import annotations

import pexpect
import pytest

from tasks.core.errors import ExitCode
from tests.helpers import FIRST, HEAD, assert_ok, terminal


@pytest.fixture
def production(project, tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'prod.sqlite3'}"
    project.setenv("DATABASE_URL_PRODUCTION", url)
    return url


def version(project) -> str:
    return project.invoke_subprocess("prod.current").stdout


def test_a_waiting_prompt_does_not_block_another_runner(project, production):
    child = terminal("prod.upgrade", "--no-backup")
    child.expect(r"Type 'production' to continue: ")

    # Another deployer, while the first prompt waits: the lock is free, no waiting at all.
    other = project.invoke_subprocess("prod.upgrade", "--yes", "--no-backup", "--lock-timeout", "0")
    assert_ok(other)

    child.sendline("production")  # the plan it answered is done already: nothing to do
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "nothing to upgrade" in child.before
    assert f"{HEAD} (head)" in version(project)


def test_an_answer_to_a_plan_that_changed_applies_nothing(project, production):
    child = terminal("prod.upgrade", "--no-backup")
    child.expect(r"Type 'production' to continue: ")
    other = project.invoke_subprocess(
        "prod.upgrade", "-r", FIRST, "--yes", "--no-backup", "--lock-timeout", "0"
    )
    assert_ok(other)

    child.sendline("production")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == ExitCode.REFUSED, child.before
    assert f"moved from base to {FIRST}" in child.before
    assert f"{FIRST}" in version(project) and "(head)" not in version(project)


def test_a_downgrade_prompt_does_not_hold_the_lock_either(project, production):
    assert_ok(project.invoke_subprocess("prod.upgrade", "--yes", "--no-backup"))
    child = terminal("prod.stamp", "-r", FIRST)
    child.expect(r"Type 'production' to continue: ")

    other = project.invoke_subprocess("prod.stamp", "-r", "base", "--yes", "--lock-timeout", "0")
    assert_ok(other)

    child.sendline("production")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == ExitCode.REFUSED, child.before
    assert "while the stamp was being confirmed" in child.before


def test_an_unanswered_prompt_ends_the_run(project, production):
    project.setenv("INVOKE_MIGRATIONS_PROMPT_TIMEOUT", "1")
    child = terminal("prod.upgrade", "--no-backup")
    child.expect(r"Type 'production' to continue: ")
    child.expect(pexpect.EOF)  # nobody types anything
    child.close()

    assert child.exitstatus == ExitCode.REFUSED, child.before
    assert "no answer within 1 s" in child.before
    assert "(head)" not in version(project)


def test_a_prompt_timeout_that_is_not_seconds_is_a_configuration_error(project, production):
    project.setenv("INVOKE_MIGRATIONS_PROMPT_TIMEOUT", "soon")

    result = project.invoke_subprocess("prod.upgrade", "--yes")

    assert result.code == ExitCode.USAGE, result.output
    assert "migrations.prompt_timeout takes seconds, not 'soon'" in result.stderr
