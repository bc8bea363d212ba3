"""The statement guard (tasks/guard/statement_guard.py): what reaches a protected database is
judged before it runs, not only what the offline plan predicted.

Each revision here does one thing when planned and another when applied (module state kept
between the plan's load and the run, a helper module asking whether Alembic renders SQL, a
`@compiles` construct, a raw DBAPI cursor), on PostgreSQL, MariaDB and SQLite, through
`invoke prod.upgrade --yes` in a subprocess as an operator runs it: exit 3, one line naming the
revision and the statement, the table's rows untouched and the database left at the revision
before.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from tasks.core.errors import ExitCode
from tests.helpers import assert_one_line_error
from tests.revision_chains import Chain, empty_chain, scalar

PEOPLE = "a00000000001"
SNEAKY = "a00000000002"

# Module state: the plan loads and calls upgrade() first (offline), the run calls it again.
MODULE_STATE = """
CALLS.append(1)
if len(CALLS) > 1:
    op.execute("DELETE FROM people")
op.add_column("people", sa.Column("nick", sa.String(20)))
"""

# A helper module asks Alembic whether it is rendering SQL: the revision's source shows nothing.
HELPER = """
from alembic import context, op


def tidy() -> None:
    if not context.get_context().as_sql:
        op.execute("DELETE FROM people")
"""
HELPER_CALL = """
guard_helper.tidy()
op.add_column("people", sa.Column("nick", sa.String(20)))
"""

# A construct compiled one way with literal binds (the plan) and another without (the run).
COMPILES = """
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import Executable, ClauseElement


class Tidy(Executable, ClauseElement):
    inherit_cache = False


@compiles(Tidy)
def _tidy(element, compiler, **kw):
    return "SELECT 1" if kw.get("literal_binds") else "DELETE FROM people"
"""

RAW_CURSOR = """
CALLS.append(1)
if len(CALLS) > 1:
    op.get_bind().connection.cursor().execute("DELETE FROM people")
op.add_column("people", sa.Column("nick", sa.String(20)))
"""


def people_chain(project) -> Chain:  # type: ignore[no-untyped-def]
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add(
        PEOPLE,
        "people",
        """
        op.create_table(
            "people",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(20)),
        )
        op.bulk_insert(
            sa.table("people", sa.column("id", sa.Integer), sa.column("name", sa.String)),
            [{"id": 1, "name": "ada"}, {"id": 2, "name": "bob"}],
        )
        """,
        'op.drop_table("people")',
    )
    return chain


def add_revision(chain: Chain, body: str, module: str = "", *, revision: str = SNEAKY) -> None:
    """A revision after the chain's last whose module holds `module` (state, imports, classes)."""
    chain.add(revision, "tidy people", body, record=False)
    path = next(chain.scripts.versions.glob(f"{revision}_*.py"))
    source = path.read_text()
    extra = textwrap.dedent(module).strip()
    path.write_text(source.replace("depends_on = None\n", f"depends_on = None\n{extra}\n", 1))


def upgrade(project, url: str, *flags: str):  # type: ignore[no-untyped-def]
    project.setenv("DATABASE_URL_PRODUCTION", url)
    return project.invoke_subprocess("prod.upgrade", "--yes", *flags)


def assert_refused_and_untouched(result, url: str) -> None:  # type: ignore[no-untyped-def]
    line = assert_one_line_error(result, ExitCode.REFUSED, SNEAKY, "DELETE FROM people")
    assert "delete-rows" in line
    assert scalar(url, "SELECT count(*) FROM people") == 2
    assert scalar(url, "SELECT version_num FROM alembic_version") == PEOPLE


def first_apply(project, url: str, chain: Chain) -> None:  # type: ignore[no-untyped-def]
    """People and their rows in place, before the revision under test is written."""
    result = upgrade(project, url)
    assert result.code == ExitCode.OK, result.output
    assert scalar(url, "SELECT count(*) FROM people") == 2


@pytest.mark.parametrize(
    ("body", "module"),
    [(MODULE_STATE, "CALLS = []"), (HELPER_CALL, "import guard_helper")],
    ids=["module-state", "helper-module"],
)
def test_a_delete_only_the_run_sends_is_refused_before_it_runs(project, any_url, body, module):
    (project.tmp / "guard_helper.py").write_text(HELPER)
    project.setenv("PYTHONPATH", str(project.tmp))
    chain = people_chain(project)
    first_apply(project, any_url, chain)
    add_revision(chain, body, module)

    result = upgrade(project, any_url)

    assert "0 destructive" in result.stdout  # the plan saw nothing: the guard is what refused
    assert_refused_and_untouched(result, any_url)


def test_a_compiles_construct_rendered_harmless_offline_is_refused_online(project, any_url):
    chain = people_chain(project)
    first_apply(project, any_url, chain)
    add_revision(chain, "op.execute(Tidy())", COMPILES)

    result = upgrade(project, any_url)

    assert "0 destructive" in result.stdout
    assert_refused_and_untouched(result, any_url)


def test_consent_to_what_the_plan_showed_does_not_cover_what_it_did_not(project, any_url):
    """`--allow-destructive` answers the plan's findings (here: a use of the connection); the
    DELETE sent through a raw DBAPI cursor is another rule, so it is still refused."""
    chain = people_chain(project)
    first_apply(project, any_url, chain)
    add_revision(chain, RAW_CURSOR, "CALLS = []")

    result = upgrade(project, any_url, "--allow-destructive")

    assert "connection-use" in result.stdout
    assert_refused_and_untouched(result, any_url)


def test_a_revision_that_swallows_the_refusal_still_stops_the_run(project, pg_url):
    body = """
    CALLS.append(1)
    try:
        if len(CALLS) > 1:
            op.execute("DELETE FROM people")
    except Exception:
        pass
    op.create_table("after_refusal", sa.Column("id", sa.Integer))
    """
    chain = people_chain(project)
    first_apply(project, pg_url, chain)
    add_revision(chain, body, "CALLS = []")

    result = upgrade(project, pg_url)

    assert_refused_and_untouched(result, pg_url)
    assert scalar(pg_url, "SELECT to_regclass('after_refusal') IS NULL") is True


def test_the_refusal_is_in_the_audit_row(project, sqlite_url):
    chain = people_chain(project)
    first_apply(project, sqlite_url, chain)
    add_revision(chain, MODULE_STATE, "CALLS = []")

    result = upgrade(project, sqlite_url)

    assert_refused_and_untouched(result, sqlite_url)
    audit = project.invoke("prod.audit", "--json", "--limit", "1")
    (row,) = json.loads(audit.stdout)
    assert row["outcome"] == "refused"
    assert SNEAKY in row["error"] and "DELETE FROM people" in row["error"]


def test_statements_the_plan_showed_and_safe_ones_run_as_before(project, any_url):
    """A revision whose run matches its plan (and a backfill of NULLs the run parameterises) is
    not refused: the guard is only the enforcement of what was consented."""
    chain = people_chain(project)
    first_apply(project, any_url, chain)
    chain.add(
        SNEAKY,
        "nick",
        """
        op.add_column("people", sa.Column("nick", sa.String(20)))
        op.get_bind().execute(
            sa.text("UPDATE people SET nick = :nick WHERE nick IS NULL"), {"nick": "x"}
        )
        op.create_index("ix_people_nick", "people", ["nick"])
        """,
        record=False,
    )

    result = upgrade(project, any_url, "--allow-destructive")

    assert result.code == ExitCode.OK, result.output
    assert scalar(any_url, "SELECT count(*) FROM people WHERE nick = 'x'") == 2


# --- the guard's decisions, without a database ------------------------------------------------


def guard_for(sql: str, covered: frozenset[str] = frozenset(), dialect: str = "postgresql"):  # type: ignore[no-untyped-def]
    from tasks.guard.statement_guard import RevisionConsent, StatementGuard
    from tasks.lint.classifier import statements

    planned = frozenset(statements(sql, dialect))
    guard = StatementGuard(dialect, {"r1": RevisionConsent(planned, covered, sql)})
    guard.enter("r1")
    return guard


def test_a_statement_the_plan_showed_passes_as_alembic_sends_it():
    guard = guard_for("CREATE TABLE t (\n    id INTEGER\n);\n\nDROP TABLE old;\n")
    guard.check("CREATE TABLE t (\n\tid INTEGER\n)\n\n")
    guard.check("DROP TABLE old")  # shown by the plan: consent for the run covered it
    assert guard.parsed == 0


def test_driver_placeholders_are_read_as_parameters():
    guard = guard_for("SELECT 1")
    guard.check("UPDATE t SET a = %(a)s WHERE a IS NULL", {"a": 1})
    guard.check("INSERT INTO t (a, b) VALUES (%s, %s)", (1, "x%%"))
    sqlite = guard_for("SELECT 1", dialect="sqlite")
    sqlite.check("INSERT INTO t (a) VALUES (?)", (1,))
    sqlite.check("BEGIN")  # SQLAlchemy's own, for the tasks' transaction


@pytest.mark.parametrize(
    ("statement", "rule"),
    [
        ("COMMIT", "transaction-control"),
        ("ROLLBACK", "transaction-control"),
        ("UPDATE t SET a = %(a)s", "update-rows"),
        ("SET lock_timeout = %(t)s", "timeout-off"),
        ("ALTER TABLE t DROP CONSTRAINT real_fk", "drop-constraint"),
        ("CREATE FUNCTION lower(integer) RETURNS int AS 'SELECT 1' LANGUAGE sql", "define-routine"),
    ],
)
def test_what_the_plan_did_not_show_is_refused_and_the_refusal_sticks(statement, rule):
    from tasks.guard.statement_guard import StatementRefused

    guard = guard_for("ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id) NOT VALID")
    with pytest.raises(StatementRefused) as refused:
        guard.check(statement, {})
    assert rule in refused.value.rules and refused.value.revision == "r1"
    with pytest.raises(StatementRefused):
        guard.check("SELECT 1")  # nothing after a refusal runs


def test_consent_for_the_revision_covers_its_rules_only():
    guard = guard_for("SELECT 1", covered=frozenset({"delete-rows"}))
    guard.check("DELETE FROM t")
    from tasks.guard.statement_guard import StatementRefused

    with pytest.raises(StatementRefused):
        guard.check("DROP TABLE t")


def test_the_tasks_own_drop_of_a_leftover_is_allowed_only_for_what_the_revision_adds():
    from tasks.guard.statement_guard import StatementRefused

    plan = "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id) NOT VALID"
    guard_for(plan).check("ALTER TABLE t DROP CONSTRAINT fk")  # op.drop_unvalidated_constraint
    with pytest.raises(StatementRefused):
        guard_for(plan).check("ALTER TABLE t DROP CONSTRAINT other_fk")
    with pytest.raises(StatementRefused):
        guard_for(plan).check("ALTER TABLE other.t DROP CONSTRAINT fk")


def test_the_refusal_line_is_one_redacted_line():
    from tasks.guard.statement_guard import StatementRefused

    guard = guard_for("SELECT 1")
    secret = "postgresql://app:Sup3rS3cretPw@db/prod"
    with pytest.raises(StatementRefused) as refused:
        guard.check(f"DELETE FROM t\nWHERE note = '{secret}'" + " OR true" * 100)
    message = str(refused.value)
    assert "\n" not in message and "Sup3rS3cretPw" not in message and len(message) < 600
