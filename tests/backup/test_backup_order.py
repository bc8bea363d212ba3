"""Issue 12.4: a protected run asks first and backs up after the answer (a "no" leaves no dump
behind), and a backup shows its progress: a live line on a terminal, one line per table in CI."""

from __future__ import annotations

import pexpect
import pytest

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.guard.test_guardrails_protected import backups, chain_at_accounts
from tests.helpers import assert_ok, terminal, version_rows
from tests.plan.test_plan import CLEAN

pytestmark = pytest.mark.postgres


def test_declined_protected_upgrade_writes_no_backup(project, pg_url):
    chain = chain_at_accounts(project, pg_url)
    chain.add("e00000000002", "clean", CLEAN)
    before = schema_snapshot(pg_url)

    child = terminal("prod.upgrade")
    child.expect(r"Type 'production' to continue: ")
    shown = child.before
    child.sendline("no")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == ExitCode.REFUSED
    assert "nickname" in shown  # the plan came first
    assert "backup written" not in shown and "backing up" not in shown
    assert backups(project) == []
    assert schema_snapshot(pg_url) == before


def test_confirmed_protected_upgrade_backs_up_after_the_answer(project, pg_url):
    chain = chain_at_accounts(project, pg_url)
    chain.add("e00000000002", "clean", CLEAN)

    child = terminal("prod.upgrade")
    child.expect(r"Type 'production' to continue: ")
    assert "backup written to" not in child.before
    child.sendline("production")
    child.expect("backing up: ")  # the live line, drawn while pg_dump runs
    child.expect("backup written to")
    child.expect("applied e00000000002")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 0, child.before
    assert version_rows(schema_snapshot(pg_url)) == [chain.head]
    assert len(backups(project)) == 1


def test_declined_protected_downgrade_writes_no_backup(project, pg_url):
    chain_at_accounts(project, pg_url)
    before = schema_snapshot(pg_url)

    child = terminal("prod.downgrade", "--rev", "-1")
    child.expect(r"Type 'production' to continue: ")
    child.sendline("prod")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == ExitCode.REFUSED
    assert backups(project) == [] and schema_snapshot(pg_url) == before


def test_backup_progress_in_ci_is_one_line_per_table(project, pg_url):
    chain_at_accounts(project, pg_url)
    project.setenv("DATABASE_URL_LOCAL", pg_url)

    result = project.invoke_alone("local.backup")

    assert_ok(result)
    lines = [line for line in result.stdout.splitlines() if "backup: table" in line]
    assert any("public.accounts" in line for line in lines), result.stdout
    assert all("written" in line and "/s" in line for line in lines)
    assert "\r" not in result.stdout and "\x1b[" not in result.stdout


def test_backup_progress_on_a_terminal_is_a_live_line(project, pg_url):
    chain_at_accounts(project, pg_url)
    project.setenv("DATABASE_URL_LOCAL", pg_url)
    for other in ("DATABASE_URL_DEVELOPMENT", "DATABASE_URL_STAGING", "DATABASE_URL_PRODUCTION"):
        project.monkeypatch.delenv(other, raising=False)  # the scope rule: local's alone

    child = terminal("local.backup")
    child.expect(pexpect.EOF)
    child.close()
    output = child.before

    assert child.exitstatus == 0, output
    assert "backing up: " in output and "tables done" in output
    assert "\r\x1b[K" in output  # the live line is wiped, not left in the scrollback
    assert "backup: table" not in output  # no per-table lines on a terminal
    assert "backup written to" in output
