"""MySQL/MariaDB commit every DDL statement: a failing revision cannot be rolled back.

What the tasks promise there instead: `plan` warns for each pending revision with more than one
DDL statement, and a failed revision reports exactly which objects it left behind (a schema
comparison before and after) with the statements that undo them, and stays failed until
`repair` records what a person did (tests/migrate/test_failed_revisions.py).
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tasks.lint import residue as ddl_residue
from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, assert_one_line_error, version_rows
from tests.revision_chains import create_table, empty_chain

pytestmark = pytest.mark.mysql

HALF_DONE = """
op.create_table("half", sa.Column("id", sa.Integer, primary_key=True))
op.add_column("good", sa.Column("nickname", sa.String(20)))
op.create_index("ix_good_nickname", "good", ["nickname"])
op.execute("INSERT INTO no_such_table (id) VALUES (1)")
"""


@pytest.fixture
def mysql_dev(project, mysql_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", mysql_url)
    return mysql_url


def _chain_with_failing_revision(project):  # type: ignore[no-untyped-def]
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    good = chain.add("d00000000001", "good", create_table("good"), record=False)
    bad = chain.add("d00000000002", "breaks after three DDL statements", HALF_DONE, record=False)
    return chain, good, bad


def test_a_failed_revision_names_what_it_left_behind(project, mysql_dev):
    _, good, bad = _chain_with_failing_revision(project)

    result = project.invoke("dev.upgrade")

    line = assert_one_line_error(
        result,
        ExitCode.FAILED,
        f"revision {bad} failed",
        "no_such_table",
        "created table half",
        "added column good.nickname",
        "added index good.ix_good_nickname",
        f"invoke dev.repair -r {bad}",
    )
    assert f"database stays at {good}" in line
    # The statements that undo it are shown, each once, the table's own index not separately.
    assert "DROP TABLE `half`;" in result.stdout
    assert "ALTER TABLE `good` DROP COLUMN `nickname`;" in result.stdout
    assert "ALTER TABLE `good` DROP INDEX `ix_good_nickname`;" in result.stdout
    assert "`half` DROP" not in result.stdout
    snapshot = schema_snapshot(mysql_dev)
    assert version_rows(snapshot) == [good]
    assert "half" in snapshot  # the caveat is real: MariaDB kept the DDL
    finished = [record for record in project.log_records() if "outcome" in record][-1]
    assert finished["outcome"] == "failed"
    residue = finished["details"]["ddl_residue"]
    assert residue["left_behind"] == [
        "created table half",
        "added column good.nickname",
        "added index good.ix_good_nickname",
    ]
    assert "DROP TABLE `half`" in residue["undo"]


def test_the_undo_statements_let_the_fixed_revision_run(project, mysql_dev):
    chain, _, bad = _chain_with_failing_revision(project)
    assert project.invoke("dev.upgrade").code == ExitCode.FAILED
    residue = [record for record in project.log_records() if "outcome" in record][-1]["details"][
        "ddl_residue"
    ]
    engine = sqlalchemy.create_engine(mysql_dev)
    with engine.begin() as connection:
        for statement in residue["undo"]:
            connection.execute(sqlalchemy.text(statement))
    engine.dispose()
    path = next(chain.scripts.versions.glob(f"{bad}_*.py"))
    path.write_text(
        path.read_text().replace("INSERT INTO no_such_table (id) VALUES (1)", "SELECT 1")
    )
    assert project.invoke("dev.upgrade").code == ExitCode.REVISION_NOT_FINISHED
    assert_ok(project.invoke("dev.repair", "-r", bad, "--reverted", "--yes"))

    assert_ok(project.invoke("dev.upgrade"))

    assert version_rows(schema_snapshot(mysql_dev)) == [bad]


def test_a_revision_failing_before_any_ddl_reports_nothing_left(project, mysql_dev):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("d10000000001", "good", create_table("good"), record=False)
    bad = chain.add(
        "d10000000002", "fails first", 'op.execute("INSERT INTO nowhere VALUES (1)")', record=False
    )

    result = project.invoke("dev.upgrade")

    line = assert_one_line_error(result, ExitCode.FAILED, f"revision {bad} failed")
    assert "left" not in line and "stamp" not in line
    assert "left behind" not in result.stdout


def test_postgresql_needs_no_residue_report(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    _, _, bad = _chain_with_failing_revision(project)

    result = project.invoke("dev.upgrade")

    line = assert_one_line_error(result, ExitCode.FAILED, f"revision {bad} failed")
    assert "left behind" not in result.stdout and "stamp" not in line
    assert "half" not in schema_snapshot(pg_url)  # rolled back whole


def test_plan_warns_for_each_revision_with_several_ddl_statements(project, mysql_dev):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    single = chain.add("d20000000001", "one table", create_table("one"), record=False)
    several = chain.add(
        "d20000000002",
        "two tables and a row",
        f'{create_table("two")}\n{create_table("three")}\nop.execute("INSERT INTO two VALUES (1)")',
        record=False,
    )

    result = project.invoke("dev.plan", "--json")

    assert_ok(result)
    plan = json.loads(result.stdout)
    rules = {item["revision"]: [f["rule"] for f in item["findings"]] for item in plan["revisions"]}
    assert "non-atomic-ddl" not in rules[single]
    assert rules[several].count("non-atomic-ddl") == 1
    finding = next(
        f for item in plan["revisions"] for f in item["findings"] if f["rule"] == "non-atomic-ddl"
    )
    assert finding["severity"] == "warning"
    assert finding["message"].startswith("2 DDL statements")


def test_plan_on_postgresql_has_no_such_warning(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("d30000000001", "two", f"{create_table('a')}\n{create_table('b')}", record=False)

    result = project.invoke("dev.plan")

    assert_ok(result)
    assert "non-atomic-ddl" not in result.output


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("CREATE TABLE a (id INT);\nCREATE TABLE b (id INT);", 2),
        ("-- Running upgrade\nBEGIN;\nCREATE TABLE a (id INT);\nCOMMIT;", 1),
        ("INSERT INTO a VALUES (1);\nUPDATE a SET id = 2;\nDELETE FROM a;", 0),
        ("UPDATE alembic_version SET version_num='b' WHERE version_num = 'a';", 0),
        ("RENAME TABLE a TO b;\nALTER TABLE b ADD COLUMN c INT;", 2),  # Command counts
        ("CREATE TABLE ((( broken;\nCREATE TABLE b (id INT);", 2),  # unparsable counts
    ],
)
def test_ddl_statement_count(sql: str, expected: int) -> None:
    assert ddl_residue.ddl_statement_count(sql) == expected


def test_compare_reports_added_changed_and_removed() -> None:
    before = frozenset(
        {
            ("table", "t", "t", "BASE TABLE"),
            ("column", "t", "a", "int YES"),
            ("column", "t", "gone", "int YES"),
        }
    )
    after = frozenset(
        {
            ("table", "t", "t", "BASE TABLE"),
            ("column", "t", "a", "bigint YES"),
            ("column", "t", "new", "int YES"),
        }
    )
    residue = ddl_residue.compare(before, after)
    assert residue.describe() == [
        "added column t.new",
        "changed column t.a",
        "dropped column t.gone",
    ]
    assert residue.undo_statements() == ["ALTER TABLE `t` DROP COLUMN `new`"]
    assert not ddl_residue.compare(before, before)
