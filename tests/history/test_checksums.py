"""Checksums of applied revisions: an edit to an applied revision is refused until repaired,
reformatting is not an edit, adopted databases get their checksums once, and ci.check compares
the committed checksum file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tasks.history.fingerprints import fingerprint_source
from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, assert_one_line_error, version_rows
from tests.revision_chains import Chain, create_table, empty_chain, repository_chain

FIRST, SECOND = "a10000000001", "a10000000002"


def chain_of_two(project) -> Chain:  # type: ignore[no-untyped-def]
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(FIRST, "first", create_table("first"), 'op.drop_table("first")', record=False)
    chain.add(SECOND, "second", create_table("second"), 'op.drop_table("second")', record=False)
    return chain


def revision_file(chain: Chain, revision: str) -> Path:
    (path,) = chain.scripts.versions.glob(f"*{revision}_*.py")
    return path


def edit(chain: Chain, revision: str, old: str, new: str) -> None:
    path = revision_file(chain, revision)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def rows(url: str) -> dict[str, dict]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            if not sqlalchemy.inspect(connection).has_table("migration_checksums"):
                return {}
            result = connection.execute(sqlalchemy.text("SELECT * FROM migration_checksums"))
            return {row["revision"]: dict(row) for row in result.mappings()}
    finally:
        engine.dispose()


# --- the fingerprint -------------------------------------------------------------------------

SOURCE = '''"""add x

Revision ID: abc
"""
import sqlalchemy as sa
from alembic import op

revision = "abc"
down_revision = "def"


def upgrade() -> None:
    """Docstrings do not count."""
    op.add_column("t", sa.Column("x", sa.Integer))  # comments neither


def downgrade() -> None:
    op.drop_column("t", "x")
'''


def test_reformatting_comments_docstrings_and_imports_do_not_change_the_fingerprint():
    reformatted = (
        '"""a different message"""\n'
        "from alembic import op\nimport sqlalchemy as sa\n"
        "revision = 'abc'\ndown_revision = 'def'\n"
        "def upgrade() -> None:\n"
        "    # a comment\n"
        "    op.add_column(\n        't',\n        sa.Column('x', sa.Integer),\n    )\n"
        "def downgrade() -> None:\n    '''A new docstring.'''\n    op.drop_column('t', 'x')\n"
    )
    one = fingerprint_source(SOURCE, revision="abc", down_revision="def")
    two = fingerprint_source(reformatted, revision="abc", down_revision="def")
    assert one.checksum == two.checksum


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"x", sa.Integer', '"x", sa.BigInteger'),  # upgrade
        ('op.drop_column("t", "x")', 'op.drop_column("t", "y")'),  # downgrade
    ],
)
def test_a_change_to_upgrade_or_downgrade_changes_the_fingerprint(old, new):
    one = fingerprint_source(SOURCE, revision="abc", down_revision="def")
    two = fingerprint_source(SOURCE.replace(old, new), revision="abc", down_revision="def")
    assert one.checksum != two.checksum


def test_the_revision_identifiers_are_part_of_the_fingerprint():
    one = fingerprint_source(SOURCE, revision="abc", down_revision="def")
    assert fingerprint_source(SOURCE, revision="abc", down_revision="xyz").checksum != one.checksum
    assert fingerprint_source(SOURCE, revision="abd", down_revision="def").checksum != one.checksum


# --- applied revisions -------------------------------------------------------------------------


def test_upgrade_records_who_applied_each_revision(project, dev_on_both):
    chain_of_two(project)
    assert_ok(project.invoke("dev.upgrade"))
    recorded = rows(dev_on_both)
    assert set(recorded) == {FIRST, SECOND}
    assert recorded[FIRST]["applied_by"] == "tester@example.com"
    assert recorded[FIRST]["applied_at"] is not None
    assert len(recorded[FIRST]["checksum"]) == 64


def test_an_edited_applied_revision_is_refused_until_repaired(project, dev_on_both):
    chain = chain_of_two(project)
    assert_ok(project.invoke("dev.upgrade", "--rev", FIRST))
    edit(
        chain,
        FIRST,
        'create_table("first", sa.Column("id", sa.Integer))',
        'create_table("first", sa.Column("id", sa.BigInteger))',
    )
    before = schema_snapshot(dev_on_both)

    for argv in (["dev.upgrade"], ["dev.preflight"], ["dev.downgrade", "--rev", "base", "--yes"]):
        result = project.invoke(*argv)
        line = assert_one_line_error(
            result, ExitCode.EDITED_REVISION, f"revision {FIRST}", "edited after it was applied"
        )
        assert "development" in line and "tester@example.com" in line, line
        assert "repair -r" in line and "--accept-edit" in line, line
        assert "sa.BigInteger" in result.stdout and "sa.Integer" in result.stdout  # the diff
        assert schema_snapshot(dev_on_both) == before  # nothing ran

    assert_one_line_error(
        project.invoke("dev.repair", "-r", FIRST, "--accept-edit", "--yes"),
        ExitCode.USAGE,
        "--reason",
    )
    result = project.invoke(
        "dev.repair", "-r", FIRST, "--accept-edit", "--reason", "type widened", "--yes"
    )
    assert_ok(result)
    assert "type widened" in rows(dev_on_both)[FIRST]["note"]
    assert_ok(project.invoke("dev.upgrade"))
    assert version_rows(schema_snapshot(dev_on_both)) == [SECOND]
    audit = project.invoke("dev.audit", "--json")
    repair = [row for row in json.loads(audit.stdout) if row["task"] == "dev.repair"]
    assert repair[0]["arguments"]["reason"] == "type widened"
    assert repair[0]["outcome"] == "ok"


def test_reformatting_an_applied_revision_is_not_an_edit(project, dev_on_both):
    chain = chain_of_two(project)
    assert_ok(project.invoke("dev.upgrade", "--rev", FIRST))
    path = revision_file(chain, FIRST)
    text = path.read_text().replace('"""first', '"""first, better described')
    text = text.replace(
        "def upgrade() -> None:\n", "def upgrade() -> None:\n    # why: a comment\n"
    )
    path.write_text(text.replace('sa.Column("id", sa.Integer)', "sa.Column( 'id',sa.Integer )"))
    assert_ok(project.invoke("dev.upgrade"))


def test_a_database_without_checksums_gets_them_once(project, dev_on_both):
    chain_of_two(project)
    assert_ok(project.invoke("dev.upgrade", "--rev", FIRST))
    engine = sqlalchemy.create_engine(dev_on_both)
    with engine.begin() as connection:  # as if applied before checksums existed
        connection.execute(sqlalchemy.text("DROP TABLE migration_checksums"))
    engine.dispose()

    first = project.invoke("dev.upgrade")
    assert_ok(first)
    assert "recorded the checksums of 1 applied revision" in first.stdout
    assert set(rows(dev_on_both)) == {FIRST, SECOND}
    assert rows(dev_on_both)[FIRST]["applied_at"] is None  # adopted: when is unknown
    again = project.invoke("dev.upgrade")
    assert_ok(again)
    assert "recorded the checksums" not in again.stdout  # said once


def test_downgrade_forgets_and_stamp_records(project, dev_on_both):
    chain_of_two(project)
    assert_ok(project.invoke("dev.upgrade"))
    assert_ok(project.invoke("dev.downgrade", "--rev", FIRST, "--yes"))
    assert set(rows(dev_on_both)) == {FIRST}
    assert_ok(project.invoke("dev.stamp", "--rev", SECOND, "--yes"))
    assert set(rows(dev_on_both)) == {FIRST, SECOND}
    assert_ok(project.invoke("dev.stamp", "--rev", "base", "--yes"))
    assert rows(dev_on_both) == {}


def test_repair_of_a_revision_that_is_not_applied_is_bad_input(project, dev_on_both):
    chain_of_two(project)
    assert_ok(project.invoke("dev.upgrade", "--rev", FIRST))
    result = project.invoke("dev.repair", "-r", SECOND, "--accept-edit", "--reason", "x", "--yes")
    assert_one_line_error(result, ExitCode.USAGE, "not applied here")
    result = project.invoke("dev.repair", "-r", FIRST, "--yes")
    assert_one_line_error(result, ExitCode.USAGE, "--accept-edit")


# --- the committed checksum file ---------------------------------------------------------------


REPOSITORY_FIRST = "299ef84b3388"


def test_ci_check_fails_on_an_edit_to_a_revision_in_the_checksum_file(project):
    chain = repository_chain(project.tmp / "scripts").use(project)
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    written = project.invoke("dev.checksums", "--write")
    assert_ok(written)
    committed = json.loads((chain.scripts.versions.parent / "checksums.json").read_text())
    assert set(committed["revisions"]) == {REPOSITORY_FIRST, chain.head}
    assert_ok(project.invoke("ci.check"))

    path = revision_file(chain, REPOSITORY_FIRST)
    text = path.read_text()
    path.write_text(
        text.replace(
            "def downgrade() -> None:\n", 'def downgrade() -> None:\n    op.execute("SELECT 1")\n'
        )
    )
    listed = project.invoke("dev.checksums")
    assert re.search(rf"{REPOSITORY_FIRST}\s+\w+\s+EDITED", listed.stdout), listed.stdout
    result = project.invoke("ci.check")
    assert_one_line_error(
        result, ExitCode.CI_CHECKSUMS, f"revision {REPOSITORY_FIRST}", "checksums.json"
    )

    assert_ok(project.invoke("dev.checksums", "--write"))  # the edit, accepted in review
    assert_ok(project.invoke("ci.check"))


def test_ci_check_notes_newer_revisions_and_fails_on_removed_ones(project):
    chain = repository_chain(project.tmp / "scripts").use(project)
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    assert_ok(project.invoke("dev.checksums", "--write"))
    chain.add("a10000000003", "third", record=False)
    result = project.invoke("ci.check")
    assert_ok(result)
    assert "1 newer revision not in it yet" in result.stdout
    assert_ok(project.invoke("dev.checksums", "--write"))
    revision_file(chain, "a10000000003").unlink()
    result = project.invoke("ci.check")
    assert_one_line_error(result, ExitCode.CI_CHECKSUMS, "a10000000003", "no longer in the scripts")


# --- fleets ---------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_fleet_checks_every_target_and_a_squash_refuses_a_target_behind(project, pg_server):
    from tests.fleet.test_fleet import Fleet

    fleet = Fleet(project, pg_server)
    try:
        chain = chain_of_two(project)
        database, schemas = fleet.create_schemas(2)
        project.setenv("FLEET_SCHEMAS_URL", fleet.url(database))
        fleet.configure(
            tenants={"schemas": {"url_variable": "FLEET_SCHEMAS_URL", "like": "tenant_%"}}
        )
        assert_ok(fleet.invoke("fleet.upgrade", "--only", schemas[0]))
        assert_ok(fleet.invoke("fleet.upgrade", "--only", schemas[1], "--rev", FIRST))
        edit(chain, FIRST, "sa.Integer", "sa.BigInteger")

        result = fleet.invoke("fleet.upgrade", "--yes")

        assert result.code == ExitCode.FLEET_PARTIAL, result.output
        assert result.output.count(f"revision {FIRST}") >= 1
        assert "edited after it was applied" in result.output
        assert "fleet.repair" not in result.output  # no such task: not suggested

        project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
        squash = fleet.invoke("dev.squash", "-r", SECOND)  # schemas[1] is behind SECOND
        assert_one_line_error(squash, ExitCode.REFUSED, f"target {schemas[1]}", f"at {FIRST}")
    finally:
        fleet.drop()
