"""The consent model end to end on real PostgreSQL, through `prod.upgrade --yes` as a user runs it:
destructive SQL hidden from the old regular expressions (a comment first, a second statement in
the same op.execute, a CTE, a DO block) is refused without --allow-destructive; a real drop, a
bare NOT NULL, a rewriting type change and a TRUNCATE need it with one finding each; the safe
forms (a widened varchar, a nullable column, a concurrent index, the validated NOT NULL pattern)
apply without it; consent typed at the prompt is recorded in the audit row."""

from __future__ import annotations

import json
import re

import pexpect
import pytest

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, assert_one_line_error, terminal, version_rows
from tests.revision_chains import Chain, empty_chain

pytestmark = pytest.mark.postgres

TABLES = """
op.create_table(
    "users",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("role", sa.Text, nullable=True),
    sa.Column("legacy", sa.Text, nullable=True),
)
op.create_table("memberships", sa.Column("id", sa.Integer, primary_key=True))
op.execute("INSERT INTO users (id, name, role) VALUES (1, 'ada', 'admin')")
op.execute("INSERT INTO memberships (id) VALUES (1)")
"""


def at_tables(project, url: str) -> Chain:  # type: ignore[no-untyped-def]
    """Two tables with a row each, applied through dev; prod points at the same database."""
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("f00000000001", "tables", TABLES, record=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    assert_ok(project.invoke("dev.upgrade"))
    project.monkeypatch.delenv("DATABASE_URL_DEVELOPMENT")
    project.setenv("DATABASE_URL_PRODUCTION", url)
    return chain


def refused_rules(line: str, revision: str) -> list[str]:
    """The rules of `revision:rule` names in the one-line refusal, in order."""
    return re.findall(rf"\b{revision}:([a-z-]+)", line)


HIDDEN = {
    "comment-first": ('op.execute("/* c */ DROP TABLE memberships")', ["drop-table"]),
    "second-statement": (
        "op.execute(\"UPDATE users SET role='member' WHERE role IS NULL; DROP TABLE memberships\")",
        ["drop-table"],
    ),
    "comment-inside": ('op.execute("DROP /* x */ TABLE memberships")', ["drop-table"]),
    "lower-case": ('op.execute("drop table memberships")', ["drop-table"]),
    "cte": (
        'op.execute("WITH gone AS (DELETE FROM memberships RETURNING id) SELECT 1 FROM gone")',
        ["delete-rows"],
    ),
    "do-block": (
        "op.execute(\"DO $$ BEGIN EXECUTE 'DROP TABLE memberships'; END $$\")",
        ["procedural-block"],
    ),
    "update-all": ("op.execute(\"UPDATE users SET role='member'\")", ["update-rows"]),
    "function": ('op.execute("SELECT pg_terminate_backend(0)")', ["function-call"]),
    "validate-under-lock": (
        'op.execute("ALTER TABLE users ADD CONSTRAINT ck CHECK (id > 0) NOT VALID")\n'
        'op.execute("ALTER TABLE users VALIDATE CONSTRAINT ck")',
        ["constraint-missing-not-valid"],
    ),
}


@pytest.mark.parametrize("body,rules", HIDDEN.values(), ids=HIDDEN.keys())
def test_hidden_destructive_sql_is_refused_with_yes_alone(project, pg_url, body, rules):
    chain = at_tables(project, pg_url)
    revision = chain.add("f00000000002", "hidden", body, record=False)
    before = schema_snapshot(pg_url)

    result = project.invoke("prod.upgrade", "--yes")

    line = assert_one_line_error(result, ExitCode.REFUSED, "--allow-destructive", "nothing changed")
    assert refused_rules(line, revision) == rules, line
    assert schema_snapshot(pg_url) == before


REAL = {
    "drop": ('op.drop_column("users", "legacy")', "drop-column"),
    "not-null": ('op.alter_column("users", "name", nullable=False)', "set-not-null"),
    "rewriting-type": (
        'op.alter_column("users", "id", type_=sa.BigInteger, existing_type=sa.Integer)',
        "change-column-type",
    ),
    "truncate": ('op.execute("TRUNCATE memberships")', "truncate"),
}


@pytest.mark.parametrize("body,rule", REAL.values(), ids=REAL.keys())
def test_real_hazards_need_allow_destructive_with_one_finding_each(project, pg_url, body, rule):
    chain = at_tables(project, pg_url)
    revision = chain.add("f00000000002", "hazard", body, record=False)
    before = schema_snapshot(pg_url)

    refused = project.invoke("prod.upgrade", "--yes")

    line = assert_one_line_error(refused, ExitCode.REFUSED, "--allow-destructive")
    assert refused_rules(line, revision) == [rule]
    assert "1 destructive or blocking statement pending" in line
    assert schema_snapshot(pg_url) == before
    assert_ok(project.invoke("prod.upgrade", "--yes", "--allow-destructive", "--no-backup"))
    assert version_rows(schema_snapshot(pg_url)) == [revision]


SAFE = {
    "widen-varchar": 'op.alter_column("users", "name", type_=sa.String(512), '
    "existing_type=sa.String(255))",
    "varchar-to-text": 'op.alter_column("users", "name", type_=sa.Text, '
    "existing_type=sa.String(255))",
    "nullable-column": 'op.add_column("users", sa.Column("nickname", sa.Text))',
    "new-table-with-index": """
        op.create_table("teams", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("name", sa.String(50)))
        op.create_index("ix_teams_name", "teams", ["name"])
    """,
    "concurrent-index": """
        with op.get_context().autocommit_block():
            op.create_index("ix_users_role", "users", ["role"], postgresql_concurrently=True)
    """,
    "validated-not-null": """
        with op.get_context().autocommit_block():
            op.execute("ALTER TABLE users ADD CONSTRAINT ck_users_name "
                       "CHECK (name IS NOT NULL) NOT VALID")
            op.execute("ALTER TABLE users VALIDATE CONSTRAINT ck_users_name")
        op.alter_column("users", "name", nullable=False, existing_type=sa.String(255))
        op.drop_constraint(op.f("ck_users_name"), "users", type_="check")
    """,
    "backfill": "op.execute(\"UPDATE users SET role = 'member' WHERE role IS NULL\")",
}


@pytest.mark.parametrize("body", SAFE.values(), ids=SAFE.keys())
def test_safe_forms_apply_with_yes_alone(project, pg_url, body):
    chain = at_tables(project, pg_url)
    revision = chain.add("f00000000002", "safe", body, record=False)

    plan = project.invoke("prod.plan", "--json")
    result = project.invoke("prod.upgrade", "--yes", "--no-backup")

    assert_ok(plan)
    summary = json.loads(plan.stdout)
    found = [item["findings"] for item in summary["revisions"]]
    assert (summary["destructive"], summary["blocking"]) == (0, 0), found
    assert_ok(result)
    assert version_rows(schema_snapshot(pg_url)) == [revision]


def test_consent_typed_at_the_prompt_is_in_the_audit_row(project, pg_url):
    chain = at_tables(project, pg_url)
    chain.add("f00000000002", "drop legacy", 'op.drop_column("users", "legacy")', record=False)

    child = terminal("prod.upgrade", "--yes", "--no-backup")
    summary = (
        r"1 revision, 1 statement: 1 destructive \(drop column users.legacy\), 0 blocking, "
        r"0 warnings"
    )
    child.expect(r"Type 'allow-destructive' to continue: ")
    shown = child.before
    # The plan's summary once (issue 18.7), right above the question.
    assert len(re.findall(summary, shown)) == 1, shown
    assert re.search(summary + r"\r\n1 destructive or blocking statement pending \(f0+2:", shown)
    child.sendline("allow-destructive")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before

    flagged = chain.add(
        "f00000000003", "drop role", 'op.drop_column("users", "role")', record=False
    )
    assert_ok(project.invoke("prod.upgrade", "--yes", "--allow-destructive", "--no-backup"))
    result = project.invoke("prod.audit", "--json")
    assert_ok(result)
    by_flag, typed = [row["arguments"] for row in json.loads(result.stdout)[:2]]  # an object
    assert typed["consent"] == "typed at the prompt" and typed["allow_destructive"] is False
    assert by_flag["consent"] == "--allow-destructive"
    assert version_rows(schema_snapshot(pg_url)) == [flagged]
