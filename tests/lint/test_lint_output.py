"""The lint as people read it, exact: one finding per statement and rule (squawk's duplicates and
its names for our drops folded in), widening a varchar / adding a nullable column / creating a
table or an index concurrently not flagged, squawk's help under its finding, each finding under
its full statement (never cut with "..."), wrapped to the terminal's width, and a one-line
summary at the end."""

from __future__ import annotations

import pytest

from tests.helpers import assert_ok
from tests.revision_chains import Chain, empty_chain

pytestmark = pytest.mark.postgres

PEOPLE = """
op.create_table(
    "people",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255)),
    sa.Column("email", sa.String(255)),
    sa.Column("legacy", sa.Text),
)
"""
LONG_INDEX = "ix_people_email_and_a_rather_long_name"


def people(project, url: str, columns: int = 80) -> Chain:  # type: ignore[no-untyped-def]
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    project.setenv("COLUMNS", str(columns))
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("a00000000001", "people", PEOPLE, 'op.drop_table("people")', record=False)
    return chain


def plan(project, *argv: str) -> str:  # type: ignore[no-untyped-def]
    result = project.invoke("dev.plan", *argv)
    assert_ok(result)
    return result.stdout.replace(str(project.tmp), "<tmp>")


def test_a_table_with_two_varchar_columns_gets_one_advice_line(project, pg_url):
    people(project, pg_url)

    out = plan(project)

    assert out == (
        "development: at base; 1 revision to apply (target head)\n"
        "  a00000000001 people  [<tmp>/scripts/alembic/versions/a00000000001_people.py]\n"
        "    | CREATE TABLE people (\n"
        "    |     id SERIAL NOT NULL,\n"
        "    |     name VARCHAR(255),\n"
        "    |     email VARCHAR(255),\n"
        "    |     legacy TEXT,\n"
        "    |     CONSTRAINT pk_people PRIMARY KEY (id)\n"
        "    | );\n"
        "      warning prefer-text-field: Changing the size of a `varchar` field requires\n"
        "          an `ACCESS EXCLUSIVE` lock, that will prevent all reads and writes to\n"
        "          the table.\n"
        "        help: Use a `TEXT` field with a `CHECK` constraint.\n"
        "1 revision, 1 statement: 0 destructive, 0 blocking, 1 warning\n"
    )


def test_findings_under_their_statement_with_help_and_a_summary(project, pg_url):
    chain = people(project, pg_url)
    assert_ok(project.invoke("dev.upgrade"))
    chain.add(
        "a00000000002",
        "widen name and add nickname",
        'op.alter_column("people", "name", type_=sa.String(512), existing_type=sa.String(255))\n'
        'op.add_column("people", sa.Column("nickname", sa.Text))',
        record=False,
    )
    chain.add(
        "a00000000003",
        "index and legacy",
        f'op.create_index("{LONG_INDEX}", "people", ["email", "name"])\n'
        'op.drop_column("people", "legacy")',
        record=False,
    )

    out = plan(project)

    assert out == (
        "development: at a00000000001; 2 revisions to apply (target head)\n"
        "  a00000000002 widen name and add nickname  "
        "[<tmp>/scripts/alembic/versions/a00000000002_widen_name_and_add_nickname.py]\n"
        "    | ALTER TABLE people ALTER COLUMN name TYPE VARCHAR(512);\n"
        "    | ALTER TABLE people ADD COLUMN nickname TEXT;\n"
        "  a00000000003 index and legacy  "
        "[<tmp>/scripts/alembic/versions/a00000000003_index_and_legacy.py]\n"
        f"    | CREATE INDEX {LONG_INDEX} ON people (email,\n"
        "    |     name);\n"
        "      BLOCKING require-concurrent-index-creation: builds an index under a lock\n"
        "          that blocks writes for the whole build\n"
        "        help: Use `concurrently` to avoid blocking writes.\n"
        "    | ALTER TABLE people DROP COLUMN legacy;\n"
        "      DESTRUCTIVE drop-column: drops a column and its data\n"
        "        help: Stop using the column in the code first; drop it in a later\n"
        "              release.\n"
        "2 revisions, 4 statements: 1 destructive (drop column people.legacy), "
        f"1 blocking (create index {LONG_INDEX}), 0 warnings\n"
    )


def test_a_downgrade_of_four_drops_lists_four_findings(project, pg_url):
    chain = people(project, pg_url, columns=60)
    chain.add(
        "a00000000002",
        "index and nickname",
        'op.create_index("ix_people_email", "people", ["email"])\n'
        'op.add_column("people", sa.Column("nickname", sa.Text))\n'
        'op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("notes")\n'
        'op.drop_column("people", "nickname")\n'
        'op.drop_column("people", "legacy")\n'
        'op.drop_index("ix_people_email", table_name="people")',
        record=False,
    )
    assert_ok(project.invoke("dev.upgrade"))

    out = plan(project, "--rev", "a00000000001")

    assert out == (
        "development: at a00000000002; 1 revision to revert (target a00000000001)\n"
        "  a00000000002 index and nickname  "
        "[<tmp>/scripts/alembic/versions/a00000000002_index_and_nickname.py]\n"
        "    | DROP TABLE notes;\n"
        "      DESTRUCTIVE drop-table: drops a table and all its rows\n"
        "        help: Stop using the table in the code first; drop\n"
        "              it in a later release.\n"
        "    | ALTER TABLE people DROP COLUMN nickname;\n"
        "      DESTRUCTIVE drop-column: drops a column and its data\n"
        "        help: Stop using the column in the code first; drop\n"
        "              it in a later release.\n"
        "    | ALTER TABLE people DROP COLUMN legacy;\n"
        "      DESTRUCTIVE drop-column: drops a column and its data\n"
        "        help: Stop using the column in the code first; drop\n"
        "              it in a later release.\n"
        "    | DROP INDEX ix_people_email;\n"
        "      DESTRUCTIVE drop-index: drops an index under an ACCESS\n"
        "          EXCLUSIVE lock (DROP INDEX CONCURRENTLY does not)\n"
        "        help: Drop the index `CONCURRENTLY`.\n"
        "1 revision, 4 statements: 4 destructive (drop table notes, drop column "
        "people.nickname, drop column people.legacy, drop index ix_people_email), 0 blocking, "
        "0 warnings\n"
    )
    body = [line for line in out.splitlines()[2:-1]]
    assert all(len(line) <= 60 for line in body)  # wrapped to the terminal's 60 columns


def test_long_statements_are_shown_whole(project, pg_url):
    chain = people(project, pg_url, columns=50)
    values = ", ".join(f"({n}, 'person number {n}')" for n in range(1, 30))
    chain.add(
        "a00000000002",
        "many people",
        f'op.execute("INSERT INTO people (id, name) VALUES {values}")',
        record=False,
    )

    out = plan(project)

    assert "..." not in out
    shown = " ".join(
        line.removeprefix("    |").strip() for line in out.splitlines() if "    | " in line
    )
    assert f"INSERT INTO people (id, name) VALUES {values};" in shown
    assert out.endswith("2 revisions, 2 statements: 0 destructive, 0 blocking, 1 warning\n")


def test_a_concurrent_index_in_an_autocommit_block_is_clean(project, pg_url):
    chain = people(project, pg_url)
    assert_ok(project.invoke("dev.upgrade"))
    chain.add(
        "a00000000002",
        "concurrent index",
        """
        with op.get_context().autocommit_block():
            op.create_index(
                "ix_people_name", "people", ["name"], postgresql_concurrently=True
            )
        """,
        record=False,
    )

    out = plan(project)

    assert out.splitlines()[2:] == [
        "    | CREATE INDEX CONCURRENTLY ix_people_name ON people (name);",
        "1 revision, 1 statement: 0 destructive, 0 blocking, 0 warnings",
    ]
