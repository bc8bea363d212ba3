"""A hostile user's third pass, on the newest code: one regression test per confirmed break.

Each test states a promise the README or the project standards make and reproduces a break the
third pass found (all 17 are fixed: each failed before its fix). Every test runs the tasks the way
a user does (Invoke's CLI, in process) on real databases.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tests.fleet.test_fleet import Fleet
from tests.helpers import assert_one_line_error
from tests.revision_chains import Chain, empty_chain

pytestmark = pytest.mark.hostile

# --- review formats: what a pull-request comment renders -------------------------------------

HOSTILE_MESSAGE = "add users\n```\n<img src=x onerror=alert(1)>\n# Approved, merge now"


def chain_with_message(project, message: str, revision: str = "a00000000001") -> Chain:  # type: ignore[no-untyped-def]
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        revision,
        message,
        'op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))',
        record=False,
    )
    return chain


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite database that exists: reads (plan, history) never create one."""
    import sqlite3

    path = tmp_path / "test.sqlite3"
    sqlite3.connect(path).close()
    return f"sqlite:///{path}"


def test_plan_markdown_keeps_a_hostile_message_inside_its_heading(project, sqlite_url):
    chain_with_message(project, HOSTILE_MESSAGE)
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url)

    result = project.invoke("dev.plan", "--format", "markdown")

    assert result.code == ExitCode.OK, result.output
    lines = result.stdout.splitlines()
    assert not any(line.startswith("# Approved") for line in lines), result.stdout
    assert "<img" not in result.stdout, result.stdout
    assert sum(line.startswith("```") for line in lines) % 2 == 0, result.stdout


def test_mermaid_history_keeps_a_hostile_message_inside_its_label(project, sqlite_url):
    chain_with_message(project, 'x\n```\n# heading\n    click r_a00000000001 href "https://evil"')
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url)

    result = project.invoke("dev.history", "--graph", "--format", "mermaid")

    assert result.code == ExitCode.OK, result.output
    assert "```" not in result.stdout, result.stdout
    # Every indented line is a statement the renderer wrote (a message's `click` line is not),
    # and the one revision is one node line: its label stays in it.
    statement = re.compile(
        r'    (r_\w+\["[^"\n]*"\]|r_\w+ --> r_\w+|classDef \w+ .+|class [\w,]+ \w+)'
    )
    lines = result.stdout.splitlines()
    assert [line for line in lines if not line.startswith(" ")] == ["flowchart TD"], result.stdout
    indented = [line for line in lines if line.startswith(" ")]
    assert all(statement.fullmatch(line) for line in indented), result.stdout
    assert sum('["' in line for line in indented) == 1, result.stdout


def test_mermaid_history_draws_two_revisions_as_two_nodes(project, sqlite_url):
    chain = chain_with_message(project, "first", revision="a.b")
    chain.add("a_b", "second", "pass", record=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url)

    result = project.invoke("dev.history", "--graph", "--format", "mermaid")

    assert result.code == ExitCode.OK, result.output
    node_lines = [line for line in result.stdout.splitlines() if '["' in line]
    ids = [line.split("[", 1)[0].strip() for line in node_lines]
    assert len(set(ids)) == 2, result.stdout


def outside_code(markdown: str) -> str:
    """The text GitHub renders as Markdown/HTML: fenced blocks and CommonMark code spans (a run
    of N backticks closed by the next run of exactly N) removed."""
    import re

    kept, fence = [], None
    for line in markdown.splitlines():
        run = re.match(r"^(`{3,})", line)
        if fence is None and run:
            fence = run.group(1)
            continue
        if fence is not None:
            if line.strip() == fence:
                fence = None
            continue
        text, index = "", 0
        while index < len(line):
            run = re.match(r"`+", line[index:])
            if not run:
                text += line[index]
                index += 1
                continue
            ticks = run.group(0)
            close = re.search(rf"(?<!`){ticks}(?!`)", line[index + len(ticks) :])
            if close is None:
                text += ticks
                index += len(ticks)
                continue
            index += len(ticks) + close.end()
        kept.append(text)
    return "\n".join(kept)


def test_plan_markdown_keeps_hostile_sql_inside_code(project, sqlite_url):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        "a00000000001",
        "drop users",
        'op.execute("DROP TABLE users -- `<img src=https://evil.example/t.png>` [ok](https://e)")',
        record=False,
    )
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url)

    result = project.invoke("dev.plan", "--format", "markdown")

    assert result.code == ExitCode.OK, result.output
    assert "evil" in result.stdout, result.stdout
    assert "evil" not in outside_code(result.stdout), result.stdout


def test_ci_check_markdown_keeps_html_from_errors_out_of_the_comment(project, sqlite_url):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        "a00000000001",
        "hostile table",
        """op.execute('CREATE TABLE "<img src=https://evil.example/x.png>" (id int)')""",
        record=False,
    )
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url)

    result = project.invoke("ci.check", "--format", "markdown")

    assert "evil.example" in result.stdout, result.output
    assert "<img" not in outside_code(result.stdout), result.stdout


@pytest.mark.parametrize(
    "argv", [("dev.plan",), ("dev.history",), ("dev.heads",), ("dev.show", "--rev", "head")]
)
def test_terminal_control_sequences_in_a_message_are_not_printed(project, sqlite_url, argv):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        "a00000000001",
        "users",
        'op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))',
        record=False,
    )
    chain.add("a00000000002", "harmless\x1b[3A\x1b[J", 'op.drop_table("users")', record=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url)

    result = project.invoke(*argv)

    assert result.code == ExitCode.OK, result.output
    assert "harmless" in result.output
    assert "\x1b" not in result.output, repr(result.output)


# --- fleet.* ---------------------------------------------------------------------------------


class H3Fleet(Fleet):
    """test_fleet's throwaway databases and fleet file, plus what the probes read back."""

    def create(self, count: int) -> list[str]:
        return self.create_databases(count)

    def engine(self, database: str) -> sqlalchemy.Engine:
        return sqlalchemy.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}")

    def tables(self, database: str) -> set[tuple[str, str]]:
        engine = self.engine(database)
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text(
                    "SELECT schemaname, tablename FROM pg_tables "
                    "WHERE schemaname NOT LIKE 'pg\\_%' AND schemaname <> 'information_schema'"
                )
            )
            found = {(schema, name) for schema, name in rows}
        engine.dispose()
        return found


@pytest.fixture
def h3fleet(project, pg_server) -> Iterator[H3Fleet]:
    made = H3Fleet(project, pg_server)
    yield made
    made.drop()


@pytest.fixture
def users_chain(project) -> Chain:
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        "b00000000001",
        "users",
        'op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("users")',
        record=False,
    )
    return chain


@pytest.mark.postgres
def test_only_never_migrates_targets_other_than_the_one_named(h3fleet, users_chain):
    (database,) = h3fleet.create(1)
    h3fleet.execute(
        database, 'CREATE SCHEMA "t_a"', 'CREATE SCHEMA "t_b"', 'CREATE SCHEMA "t_a,t_b"'
    )
    h3fleet.project.setenv("H3_SCHEMAS", h3fleet.url(database))
    h3fleet.configure(tenants={"schemas": {"url_variable": "H3_SCHEMAS", "like": "t\\_%"}})

    result = h3fleet.invoke("fleet.upgrade", "--only", "t_a,t_b")

    tables = h3fleet.tables(database)
    assert ("t_a,t_b", "users") in tables or result.code != ExitCode.OK, result.output
    assert ("t_a", "users") not in tables or result.code != ExitCode.OK, result.output


@pytest.mark.postgres
@pytest.mark.parametrize("only", ["", ",", " "])
def test_an_empty_only_selects_nothing_instead_of_everything(h3fleet, users_chain, only):
    databases = h3fleet.create(2)
    h3fleet.configure(tenants={"urls": [h3fleet.url(name) for name in databases]})

    result = h3fleet.invoke("fleet.upgrade", "--only", only)

    for name in databases:
        assert ("public", "users") not in h3fleet.tables(name), result.output
    assert_one_line_error(result, ExitCode.USAGE, "--only")


@pytest.mark.postgres
def test_an_empty_shard_is_refused_like_a_blank_one(h3fleet, users_chain):
    databases = h3fleet.create(2)
    h3fleet.configure(tenants={"urls": [h3fleet.url(name) for name in databases]})

    result = h3fleet.invoke("fleet.upgrade", "--shard", "")

    for name in databases:
        assert ("public", "users") not in h3fleet.tables(name), result.output
    assert_one_line_error(result, ExitCode.USAGE, "--shard")


@pytest.mark.postgres
def test_a_protected_schema_fleet_upgrade_takes_a_backup(h3fleet, users_chain):
    (database,) = h3fleet.create(1)
    h3fleet.execute(database, 'CREATE SCHEMA "t_1"')
    h3fleet.project.setenv("H3_SCHEMAS", h3fleet.url(database))
    h3fleet.configure(
        tenants={"schemas": {"url_variable": "H3_SCHEMAS", "like": "t\\_%"}, "protected": True}
    )

    result = h3fleet.invoke("fleet.upgrade", "--yes")

    assert result.code == ExitCode.OK, result.output
    assert ("t_1", "users") in h3fleet.tables(database)
    backups = (
        list(h3fleet.project.backup_dir.glob("*")) if h3fleet.project.backup_dir.exists() else []
    )
    assert backups, f"no backup of the protected database was taken:\n{result.output}"


@pytest.mark.postgres
@pytest.mark.parametrize("case", ["unknown revision", "plan failed"])
def test_fleet_plan_that_cannot_plan_a_target_does_not_exit_0(h3fleet, users_chain, case):
    (database,) = h3fleet.create(1)
    if case == "unknown revision":
        h3fleet.execute(
            database,
            "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
            "INSERT INTO alembic_version VALUES ('deadbeef0000')",
        )
    h3fleet.configure(tenants={"urls": [h3fleet.url(database)]})
    argv = ["fleet.plan"] + (["--rev", "-1"] if case == "plan failed" else [])

    result = h3fleet.invoke(*argv)

    assert case in result.output, result.output
    assert result.code != ExitCode.OK, result.output


@pytest.mark.postgres
def test_a_target_another_runner_upgraded_is_not_reported_as_migrated(h3fleet, users_chain):
    from tasks.guard.lock import LOCK_NAME, _advisory_key
    from tests.revision_chains import spawn, wait_until

    (database,) = h3fleet.create(1)
    h3fleet.configure(tenants={"urls": [h3fleet.url(database)]})
    engine = h3fleet.engine(database)
    other = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    key = _advisory_key(LOCK_NAME)
    try:
        other.exec_driver_sql(f"SELECT pg_advisory_lock({key})")  # the other runner's lock
        runner = spawn("-f", str(h3fleet.file), "fleet.upgrade", "--json")
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE '%%fleet.upgrade%%' AND query LIKE '%%pg_locks%%'"
        )

        def runner_waits() -> object:
            assert runner.poll() is None, runner.communicate()
            return other.exec_driver_sql(waiting).scalar()

        wait_until(runner_waits, what="the runner to wait for the lock")
        # What the other runner's upgrade does before it lets go of the lock.
        other.exec_driver_sql("CREATE TABLE users (id int PRIMARY KEY)")
        other.exec_driver_sql("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        other.exec_driver_sql(f"INSERT INTO alembic_version VALUES ('{users_chain.head}')")
        other.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")
        stdout, stderr = runner.communicate(timeout=120)
    finally:
        other.close()
        engine.dispose()

    assert runner.returncode == 0, stdout + stderr
    (result,) = json.loads(stdout)["results"]
    assert result["before"] == [users_chain.head], result
    assert result["status"] == "at head", result


@pytest.mark.postgres
def test_fleet_plan_shows_each_dialects_sql(h3fleet, users_chain, sqlite_url):
    (database,) = h3fleet.create(1)
    users_chain.add(
        "b00000000002",
        "retype",
        'op.alter_column("users", "id", type_=sa.BigInteger, existing_type=sa.Integer)',
        record=False,
    )
    h3fleet.configure(tenants={"urls": [h3fleet.url(database), sqlite_url]})
    sqlite_name = sqlite_url.rsplit("/", 1)[-1].rsplit(".", 1)[0]

    result = h3fleet.invoke("fleet.plan")

    assert f"tenants:{database}: at base" in result.output, result.output
    assert f"tenants:{sqlite_name}: at base" in result.output, result.output


FORGED = "t_a\n  ok          t_fake  base -> b00000000001 (0.1 s)"


@pytest.mark.postgres
@pytest.mark.parametrize("task", ["fleet.status", "fleet.upgrade"])
def test_a_schema_name_cannot_forge_lines_of_the_fleet_report(h3fleet, users_chain, task):
    (database,) = h3fleet.create(1)
    engine = h3fleet.engine(database)
    with engine.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{FORGED}"')
        connection.exec_driver_sql('CREATE SCHEMA "t_b\x1b[1A\x1b[2K"')
    engine.dispose()
    h3fleet.project.setenv("H3_SCHEMAS", h3fleet.url(database))
    h3fleet.configure(tenants={"schemas": {"url_variable": "H3_SCHEMAS", "like": "t\\_%"}})

    result = h3fleet.invoke(task)

    assert result.code == ExitCode.OK, result.output
    lines = result.output.splitlines()
    assert not any(line.lstrip().startswith("ok          t_fake") for line in lines), lines
    assert "\x1b" not in result.output, repr(result.output)


# --- the new verbs -----------------------------------------------------------------------------


def test_revision_refuses_the_reserved_id_base(project, users_chain, sqlite_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url)
    before = set(users_chain.scripts.versions.glob("*.py"))

    result = project.invoke("dev.revision", "-m", "x", "--empty", "--rev-id", "base")

    assert set(users_chain.scripts.versions.glob("*.py")) == before, result.output
    assert_one_line_error(result, ExitCode.USAGE, "--rev-id")
    assert project.invoke("dev.history").code == ExitCode.OK


def test_show_with_a_relative_revision_is_one_clear_line(project, users_chain):
    project.monkeypatch.delenv("DATABASE_URL_DEVELOPMENT", raising=False)

    result = project.invoke("dev.show", "--rev", "-1")

    assert "unexpected error" not in result.output, result.output
    assert result.code in (ExitCode.OK, ExitCode.USAGE), result.output


def test_edit_with_an_unparsable_editor_is_a_configuration_error(project, users_chain):
    project.setenv("EDITOR", '"unterminated')
    project.monkeypatch.delenv("VISUAL", raising=False)

    result = project.invoke("dev.edit", "--rev", "head")

    assert "unexpected error" not in result.output, result.output
    assert_one_line_error(result, ExitCode.USAGE, "EDITOR")
