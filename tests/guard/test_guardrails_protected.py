"""The protected upgrade on real PostgreSQL (`prod`): plan, backup, consent, apply, verify, audit.
Destructive and lock-heavy revisions are refused with --yes alone and applied with
--allow-destructive (or its typed word); a backup is written before anything changes; a
protected downgrade will not run without one; every attempt leaves an audit row."""

from __future__ import annotations

import json
import subprocess

import pexpect
import pytest

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, assert_one_line_error, terminal, version_rows
from tests.plan.test_plan import ACCOUNTS, CLEAN, DESTRUCTIVE, LOCK_HEAVY
from tests.revision_chains import Chain, counts, create_table, empty_chain

pytestmark = pytest.mark.postgres


def chain_at_accounts(project, url: str) -> Chain:  # type: ignore[no-untyped-def]
    """A chain whose first revision (accounts) is applied through dev; prod points at it."""
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("e00000000001", "accounts", ACCOUNTS, 'op.drop_table("accounts")')
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    assert_ok(project.invoke("dev.upgrade"))
    project.monkeypatch.delenv("DATABASE_URL_DEVELOPMENT")
    project.setenv("DATABASE_URL_PRODUCTION", url)
    return chain


def backups(project) -> list:  # type: ignore[no-untyped-def]
    directory = project.backup_dir
    return sorted(directory.glob("*.dump")) if directory.exists() else []


def audit(project) -> list[dict]:  # type: ignore[no-untyped-def]
    result = project.invoke("prod.audit", "--json")
    assert_ok(result)
    return json.loads(result.stdout)


def dump_tables(path) -> set[str]:  # type: ignore[no-untyped-def]
    """Table names in a pg_dump custom-format archive's table of contents."""
    listing = subprocess.run(
        ["pg_restore", "--list", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-2] for line in listing.splitlines() if " TABLE public " in line}


@pytest.mark.parametrize(
    ("body", "rules"),
    [
        (DESTRUCTIVE, ["drop-column", "change-column-type", "set-not-null"]),
        (LOCK_HEAVY, ["adding-required-field", "require-concurrent-index-creation"]),
    ],
    ids=["destructive", "lock-heavy"],
)
def test_yes_alone_refuses_destructive_and_lock_heavy_revisions(project, pg_url, body, rules):
    chain = chain_at_accounts(project, pg_url)
    revision = chain.add("e00000000002", "risky", body)
    before = schema_snapshot(pg_url)

    result = project.invoke("prod.upgrade", "--yes")

    line = assert_one_line_error(result, ExitCode.REFUSED, "--allow-destructive", "nothing changed")
    for rule in rules:
        assert f"{revision}:{rule}" in line
        assert rule in result.stdout  # the plan said so first
    assert schema_snapshot(pg_url) == before
    assert backups(project) == []  # refused before the backup, not after it
    (row, *_) = audit(project)
    assert (row["task"], row["outcome"]) == ("prod.upgrade", "refused")
    assert row["revision_before"] == row["revision_after"] == chain.ids[1]


def test_allow_destructive_applies_them_after_a_backup(project, pg_url):
    chain = chain_at_accounts(project, pg_url)
    chain.add("e00000000002", "lock heavy", LOCK_HEAVY)
    chain.add("e00000000003", "destructive", DESTRUCTIVE)

    result = project.invoke("prod.upgrade", "--yes", "--allow-destructive")

    assert_ok(result)
    assert version_rows(schema_snapshot(pg_url)) == [chain.head]
    assert counts(pg_url) == {revision: 1 for revision in chain.ids[1:]}
    (backup,) = backups(project)
    assert str(backup) in result.stdout
    assert "legacy" in str(
        subprocess.run(
            ["pg_restore", "--schema-only", "-f", "-", str(backup)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    finished = [record for record in project.log_records() if "outcome" in record][-1]
    assert finished["details"]["backup"] == str(backup)
    assert finished["outcome"] == "ok"
    (row, *_) = audit(project)
    assert (row["outcome"], row["revision_after"]) == ("ok", chain.head)


def test_a_clean_revision_needs_no_flag_and_the_backup_predates_it(project, pg_url):
    chain = chain_at_accounts(project, pg_url)
    chain.add("e00000000002", "clean", f"{CLEAN}\n{create_table('after_backup')}")

    result = project.invoke("prod.upgrade", "--yes")

    assert_ok(result)
    assert "after_backup" in schema_snapshot(pg_url)
    (backup,) = backups(project)
    assert backup.read_bytes().startswith(b"PGDMP")
    tables = dump_tables(backup)
    assert "accounts" in tables and "after_backup" not in tables
    out = result.stdout
    assert out.index("backup written to") < out.index("applied e00000000002")


def test_without_yes_or_a_terminal_nothing_is_backed_up(project, pg_url):
    chain = chain_at_accounts(project, pg_url)
    chain.add("e00000000002", "clean", CLEAN)
    before = schema_snapshot(pg_url)

    result = project.invoke_subprocess("prod.upgrade", input="production\n")

    assert_one_line_error(result, ExitCode.REFUSED, "no terminal", "--yes")
    assert backups(project) == [] and schema_snapshot(pg_url) == before


def test_no_backup_on_a_protected_upgrade_is_explicit(project, pg_url):
    chain = chain_at_accounts(project, pg_url)
    chain.add("e00000000002", "clean", CLEAN)

    result = project.invoke("prod.upgrade", "--yes", "--no-backup")

    assert_ok(result)
    assert "--no-backup" in result.stderr
    assert backups(project) == []
    assert version_rows(schema_snapshot(pg_url)) == [chain.head]


def test_no_backup_on_a_protected_downgrade_is_refused(project, pg_url):
    chain_at_accounts(project, pg_url)
    before = schema_snapshot(pg_url)

    result = project.invoke("prod.downgrade", "--rev", "base", "--yes", "--no-backup")

    assert_one_line_error(result, ExitCode.REFUSED, "backup is mandatory", "--no-backup")
    assert schema_snapshot(pg_url) == before
    assert backups(project) == []
    (row, *_) = audit(project)
    assert (row["task"], row["outcome"]) == ("prod.downgrade", "refused")


def test_a_protected_downgrade_takes_a_backup_first(project, pg_url):
    chain = chain_at_accounts(project, pg_url)

    result = project.invoke("prod.downgrade", "--rev", "c0000000000c", "--yes")

    assert_ok(result)
    assert version_rows(schema_snapshot(pg_url)) == ["c0000000000c"]
    (backup,) = backups(project)
    assert "accounts" in dump_tables(backup)
    assert "DESTRUCTIVE drop-table" in result.stdout
    assert result.stdout.index("backup written to") < result.stdout.index(f"reverted {chain.head}")


def test_a_shared_downgrade_takes_a_backup_by_default(project, pg_url):
    chain = chain_at_accounts(project, pg_url)
    project.monkeypatch.delenv("DATABASE_URL_PRODUCTION")  # staging on prod's is refused
    project.setenv("DATABASE_URL_STAGING", pg_url)

    result = project.invoke("staging.downgrade", "--rev", "-1", "--yes")

    assert_ok(result)
    (backup,) = backups(project)
    assert "accounts" in dump_tables(backup)
    assert "DESTRUCTIVE drop-table" in result.stdout  # the plan names what is lost
    assert version_rows(schema_snapshot(pg_url)) == [chain.ids[0]]


def test_a_failing_protected_upgrade_names_the_revision(project, pg_url):
    chain = chain_at_accounts(project, pg_url)
    good = chain.add("e00000000002", "good", create_table("good"))
    bad = chain.add("e00000000003", "bad", 'op.execute("SELECT 1/0")')

    result = project.invoke("prod.upgrade", "--yes")

    assert_one_line_error(result, ExitCode.FAILED, f"revision {bad} failed", "division by zero")
    assert version_rows(schema_snapshot(pg_url)) == [good]
    assert len(backups(project)) == 1
    (row, *_) = audit(project)
    assert (row["outcome"], row["revision_after"]) == ("failed", good)
    assert bad in row["error"]


def test_audit_rows_for_ok_refused_and_failed_runs(project, pg_url):
    chain = chain_at_accounts(project, pg_url)
    start = chain.ids[1]
    risky = chain.add("e00000000002", "risky", DESTRUCTIVE)
    assert project.invoke("prod.upgrade", "--yes").code == ExitCode.REFUSED
    assert_ok(project.invoke("prod.upgrade", "--yes", "--allow-destructive", "--no-backup"))
    broken = chain.add("e00000000003", "broken", 'op.execute("SELECT * FROM missing")')
    assert project.invoke("prod.upgrade", "--yes", "--no-backup").code == ExitCode.FAILED

    result = project.invoke("prod.audit", "--json", "--limit", "10")

    assert_ok(result)
    rows = [row for row in json.loads(result.stdout) if row["task"] == "prod.upgrade"]
    failed, ok, refused = rows  # newest first
    assert [refused["outcome"], ok["outcome"], failed["outcome"]] == ["refused", "ok", "failed"]
    for row in (refused, ok, failed):
        assert row["environment"] == "production" and row["task"] == "prod.upgrade"
        assert row["operator"] == "tester@example.com"
        assert row["host"] and row["git_commit"]
        assert row["started_at"] <= row["finished_at"] and row["duration_ms"] >= 0
        assert row["arguments"]["yes"] is True
    assert (refused["revision_before"], refused["revision_after"]) == (start, start)
    assert "--allow-destructive" in refused["error"]
    assert (ok["revision_before"], ok["revision_after"]) == (start, risky)
    assert ok["arguments"]["allow_destructive"] is True
    assert ok["error"] is None
    assert (failed["revision_before"], failed["revision_after"]) == (risky, risky)
    assert broken in failed["error"] and "missing" in failed["error"]
    # Human-readable too, and --limit is honoured.
    text = project.invoke("prod.audit", "--limit", "2")
    assert_ok(text)
    rows = [line for line in text.stdout.splitlines()[1:] if not line.startswith("    ")]
    assert [row.split()[2] for row in rows] == ["failed", "ok"]  # the OUTCOME column


def test_audit_is_only_for_shared_databases_and_readable_when_empty(project, pg_url):
    project.setenv("DATABASE_URL_PRODUCTION", pg_url)

    result = project.invoke("prod.audit")

    assert_ok(result)
    assert "no audited runs yet" in result.stdout


# --- typed consent on a terminal ------------------------------------------------------------


def test_typing_the_name_then_allow_destructive_applies_them(project, pg_url):
    """The environment's name is asked first, then the destructive consent (issue 18.7)."""
    chain = chain_at_accounts(project, pg_url)
    chain.add("e00000000002", "destructive", DESTRUCTIVE)

    child = terminal("prod.upgrade")
    child.expect(r"Type 'production' to continue: ")
    assert "backup written to" not in child.before  # asked first, backed up after (issue 12.4)
    child.sendline("production")
    child.expect(r"Type 'allow-destructive' to continue: ")
    child.sendline("allow-destructive")
    child.expect("backup written to")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 0, child.before
    assert version_rows(schema_snapshot(pg_url)) == [chain.head]


def test_a_wrong_word_at_the_destructive_prompt_changes_nothing(project, pg_url):
    chain = chain_at_accounts(project, pg_url)
    chain.add("e00000000002", "destructive", DESTRUCTIVE)
    before = schema_snapshot(pg_url)

    child = terminal("prod.upgrade", "--yes")  # --yes does not answer this prompt
    child.expect(r"Type 'allow-destructive' to continue: ")
    child.sendline("yes")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == ExitCode.REFUSED
    assert schema_snapshot(pg_url) == before
