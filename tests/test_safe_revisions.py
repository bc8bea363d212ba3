"""Lock-safe autogenerate on PostgreSQL (issue 9): for an index, a foreign key, a unique
constraint and NOT NULL on an existing table, a model edit and `dev.revision --autogenerate`
write the form PostgreSQL runs while writers go on; production applies it; the stairway passes;
a concurrent index build interrupted midway and re-run ends with one valid index.

Scripts are private copies (INVOKE_MIGRATIONS_ALEMBIC_INI); the model edits are in
tests/models_safe.py. The plain forms these replace are in bench/lock_bench.py, measured."""

from __future__ import annotations

import re
import textwrap

import pytest
import sqlalchemy

from tasks.errors import ExitCode
from tests.conftest import ROOT
from tests.helpers import (
    HEAD,
    assert_ok,
    assert_one_line_error,
    copy_scripts,
    prepare,
    sqlite_url,
    venv_bin,
)

pytestmark = pytest.mark.postgres

NEEDS_CLASSIFIER = pytest.mark.xfail(
    strict=False,
    reason="needs the pglast classifier: today's regular expressions flag SET NOT NULL and the "
    "DROP CONSTRAINT of the temporary check even inside the validated-CHECK pattern",
)

# What `upgrade()` says, exactly, after the model edit of the same name in tests/models_safe.py.
SAFE_UPGRADES = {
    "index": """
        # CREATE INDEX CONCURRENTLY: writers keep going; it cannot run in a transaction.
        # A failed concurrent build leaves an INVALID index: drop such a leftover first.
        with op.get_context().autocommit_block():
            op.drop_invalid_index("ix_users_display_name", "users")
            op.create_index(
                "ix_users_display_name",
                "users",
                ["display_name"],
                unique=False,
                postgresql_concurrently=True,
                if_not_exists=True,
            )
        """,
    "foreign_key": """
        op.add_column("projects", sa.Column("reviewer_id", sa.Integer(), nullable=True))
        # Foreign key added NOT VALID (a brief lock), then validated: VALIDATE CONSTRAINT
        # scans under SHARE UPDATE EXCLUSIVE, so writers keep going; each step commits.
        # A failed validation leaves it NOT VALID: drop such a leftover first.
        with op.get_context().autocommit_block():
            op.drop_unvalidated_constraint("fk_projects_reviewer_id_users", "projects")
            op.create_foreign_key(
                op.f("fk_projects_reviewer_id_users"),
                "projects",
                "users",
                ["reviewer_id"],
                ["id"],
                ondelete="SET NULL",
                postgresql_not_valid=True,
            )
            op.execute("ALTER TABLE projects VALIDATE CONSTRAINT fk_projects_reviewer_id_users")
        """,
    "unique": """
        # Unique index built CONCURRENTLY (a failed build leaves an INVALID index: drop it
        # first), then attached as the constraint: USING INDEX needs no scan.
        with op.get_context().autocommit_block():
            op.drop_invalid_index("uq_projects_name_owner_id", "projects")
            op.create_index(
                op.f("uq_projects_name_owner_id"),
                "projects",
                ["name", "owner_id"],
                unique=True,
                postgresql_concurrently=True,
                if_not_exists=True,
            )
            op.execute(
                "ALTER TABLE projects "
                "ADD CONSTRAINT uq_projects_name_owner_id "
                "UNIQUE USING INDEX uq_projects_name_owner_id"
            )
        """,
    "not_null": """
        # NOT NULL without a scan under ACCESS EXCLUSIVE: a CHECK added NOT VALID, validated
        # while writers go on, lets SET NOT NULL (PostgreSQL 12+) skip the scan; then dropped.
        # A failed run leaves the CHECK behind: it is dropped first.
        with op.get_context().autocommit_block():
            op.execute(
                "ALTER TABLE projects DROP CONSTRAINT IF EXISTS ck_projects_description_not_null"
            )
            op.execute(
                "ALTER TABLE projects "
                "ADD CONSTRAINT ck_projects_description_not_null "
                "CHECK (description IS NOT NULL) NOT VALID"
            )
            op.execute("ALTER TABLE projects VALIDATE CONSTRAINT ck_projects_description_not_null")
            op.alter_column("projects", "description", existing_type=sa.TEXT(), nullable=False)
            op.execute("ALTER TABLE projects DROP CONSTRAINT ck_projects_description_not_null")
        """,
}
CHANGES = list(SAFE_UPGRADES)
# Changes that only the classifier of issue 9 (tasks/lint.py on pglast) accepts without consent.
CLASSIFIER_PENDING = {"not_null"}


def changes(*, pending_mark: pytest.MarkDecorator | None = None) -> list:
    return [
        pytest.param(change, marks=pending_mark) if pending_mark and change in CLASSIFIER_PENDING
        else change
        for change in CHANGES
    ]  # fmt: skip


@pytest.fixture
def scripts(project, pg_server):
    copy = copy_scripts(project.tmp / "scripts")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv(
        "INVOKE_MIGRATIONS_CI_POSTGRES_URL", pg_server.url.render_as_string(hide_password=False)
    )
    return copy


def write_revision(project, url: str, change: str) -> tuple[str, str]:
    """The model edit `change` autogenerated against `url` at head: (path, source)."""
    prepare(project, url)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", f"tests.models_safe:{change}")
    result = project.invoke("dev.revision", "-m", f"safe {change}", "--autogenerate")
    assert_ok(result)
    match = re.search(r"^created (\S+\.py)$", result.stdout, re.M)
    assert match, result.stdout
    path = ROOT / match[1]
    return str(path), path.read_text()


def body(source: str, function: str) -> str:
    """The commands of `def function()`, between Alembic's marker comments, dedented."""
    match = re.search(
        rf"def {function}\(\) -> None:\n    # ### commands auto generated by Alembic - please "
        r"adjust! ###\n(.*?)    # ### end Alembic commands ###",
        source,
        re.S,
    )
    assert match, source
    return textwrap.dedent(match[1]).strip()


def query(url: str, sql: str, **params) -> list[tuple]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sqlalchemy.text(sql), params)]
    finally:
        engine.dispose()


# --- what autogenerate writes --------------------------------------------------------------


@pytest.mark.parametrize("change", CHANGES)
def test_autogenerate_writes_the_safe_form(project, scripts, pg_url, change):
    path, source = write_revision(project, pg_url, change)

    assert body(source, "upgrade") == textwrap.dedent(SAFE_UPGRADES[change]).strip()
    # The file is ready to commit: it passes the project's formatter and linter as written.
    for command in (["format", "--check"], ["check"]):
        checked = project.run(venv_bin("ruff"), *command, path)
        assert checked.code == 0, checked.output


def test_index_downgrade_is_dropped_concurrently(project, scripts, pg_url):
    _, source = write_revision(project, pg_url, "index")

    assert (
        body(source, "downgrade")
        == textwrap.dedent(
            """
        # DROP INDEX CONCURRENTLY: writers keep going; it cannot run in a transaction.
        with op.get_context().autocommit_block():
            op.drop_index(
                "ix_users_display_name",
                table_name="users",
                postgresql_concurrently=True,
                if_exists=True,
            )
        """
        ).strip()
    )


def test_a_table_created_in_the_same_revision_is_exempt(project, scripts, pg_url):
    _, source = write_revision(project, pg_url, "new_table")

    upgrade = body(source, "upgrade")
    plain = 'op.create_index(op.f("ix_labels_project_id"), "labels", ["project_id"], unique=False)'
    assert plain in upgrade
    assert "autocommit_block" not in source and "concurrently" not in source


def test_a_rewriting_type_change_is_left_as_alembic_writes_it(project, scripts, pg_url):
    _, source = write_revision(project, pg_url, "retype")

    assert "type_=sa.BigInteger()" in body(source, "upgrade")
    assert "autocommit_block" not in source
    plan = project.invoke("dev.plan")
    assert "DESTRUCTIVE change-column-type" in plan.stdout, plan.output


def test_safe_revisions_false_writes_what_alembic_writes(project, scripts, pg_url):
    project.setenv("INVOKE_MIGRATIONS_SAFE_REVISIONS", "false")
    _, source = write_revision(project, pg_url, "index")

    assert body(source, "upgrade") == (
        'op.create_index("ix_users_display_name", "users", ["display_name"], unique=False)'
    )


def test_sqlite_gets_what_alembic_writes(project, scripts):
    _, source = write_revision(project, sqlite_url(project.tmp / "dev.sqlite3"), "index")

    assert "autocommit_block" not in source and "concurrently" not in source
    assert "batch_op.create_index" in source


@pytest.mark.parametrize("value", ["no", "False!", "1"])
def test_a_bad_safe_revisions_value_is_one_line_and_writes_nothing(project, scripts, pg_url, value):
    prepare(project, pg_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", "tests.models_safe:index")
    project.setenv("INVOKE_MIGRATIONS_SAFE_REVISIONS", value)
    files = scripts.files()

    result = project.invoke("dev.revision", "-m", "x", "--autogenerate")

    assert_one_line_error(result, ExitCode.USAGE, "migrations.safe_revisions", "true or false")
    assert scripts.files() == files


# --- what running it does ------------------------------------------------------------------


def assert_applied(url: str, change: str) -> None:
    """The change is in the database, complete and valid, with nothing left behind."""
    if change == "index":
        rows = query(
            url,
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = 'ix_users_display_name'",
        )
        assert rows == [(True,)]
    elif change == "foreign_key":
        rows = query(
            url,
            "SELECT convalidated FROM pg_constraint "
            "WHERE conname = 'fk_projects_reviewer_id_users'",
        )
        assert rows == [(True,)]
    elif change == "unique":
        rows = query(
            url,
            "SELECT contype, (SELECT indisvalid FROM pg_index WHERE indexrelid = conindid) "
            "FROM pg_constraint WHERE conname = 'uq_projects_name_owner_id'",
        )
        assert rows == [("u", True)]
    else:
        rows = query(
            url,
            "SELECT is_nullable FROM information_schema.columns "
            "WHERE table_name = 'projects' AND column_name = 'description'",
        )
        assert rows == [("NO",)]
        leftovers = query(url, "SELECT conname FROM pg_constraint WHERE conname LIKE '%not_null'")
        assert leftovers == []


@pytest.mark.parametrize("change", changes(pending_mark=NEEDS_CLASSIFIER))
def test_production_applies_it_without_allow_destructive(project, scripts, pg_url, change):
    write_revision(project, pg_url, change)
    project.setenv("DATABASE_URL_PRODUCTION", pg_url)

    result = project.invoke("prod.upgrade", "--yes", "--no-backup")

    assert_ok(result)
    assert_applied(pg_url, change)
    assert_ok(project.invoke("dev.check"))  # the models and the database agree


def test_the_not_null_form_applies_on_postgresql(project, scripts, pg_url):
    """Until the classifier accepts it without consent, the form itself is proven here."""
    write_revision(project, pg_url, "not_null")
    query(pg_url, "SELECT 1")  # (the rows of projects are empty: nothing to backfill)
    project.setenv("DATABASE_URL_PRODUCTION", pg_url)

    assert_ok(project.invoke("prod.upgrade", "--yes", "--no-backup", "--allow-destructive"))

    assert_applied(pg_url, "not_null")
    assert_ok(project.invoke("dev.check"))


@pytest.mark.parametrize("change", changes(pending_mark=NEEDS_CLASSIFIER))
def test_plan_shows_no_destructive_and_no_blocking_finding(project, scripts, pg_url, change):
    write_revision(project, pg_url, change)

    result = project.invoke("dev.plan")

    assert_ok(result)
    assert f"safe {change}" in result.stdout
    assert "DESTRUCTIVE" not in result.stdout and "BLOCKING" not in result.stdout, result.stdout
    assert "WARNING" not in result.output


@pytest.mark.parametrize("change", CHANGES)
def test_ci_check_stairway_passes_both_ways(project, scripts, pg_url, change):
    write_revision(project, pg_url, change)
    project.setenv("INVOKE_MIGRATIONS_CI_FAIL_ON", "")  # lint has its own test above

    result = project.invoke("ci.check")

    assert "ok     stairway: postgresql" in result.stdout, result.output
    assert "ok     models: postgresql" in result.stdout, result.output
    if change == "index":  # the other forms, like plain Alembic's, need batch mode on SQLite
        assert_ok(result)


def test_interrupted_concurrent_index_rerun_ends_with_one_valid_index(project, scripts, pg_url):
    """A writer's open transaction makes the build wait; lock_timeout (set for the session, so
    also inside the autocommit block) stops it midway, leaving an INVALID index. The re-run
    drops that leftover and builds the index again."""
    write_revision(project, pg_url, "index")
    project.setenv("INVOKE_MIGRATIONS_ENVIRONMENTS_DEVELOPMENT_POSTGRES_LOCK_TIMEOUT", "500ms")
    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.connect() as writer:
            writer.execute(
                sqlalchemy.text(
                    "INSERT INTO users (email, display_name) VALUES ('a@example.com', 'Ann')"
                )
            )  # left uncommitted: CREATE INDEX CONCURRENTLY waits for this transaction
            interrupted = project.invoke("dev.upgrade")
            writer.rollback()
    finally:
        engine.dispose()

    assert interrupted.code == ExitCode.FAILED, interrupted.output
    assert "lock timeout" in interrupted.stderr, interrupted.stderr
    assert "Traceback" not in interrupted.output
    validity = (
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = 'ix_users_display_name'"
    )
    assert query(pg_url, validity) == [(False,)]  # the leftover of the interrupted build
    assert query(pg_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]

    assert_ok(project.invoke("dev.upgrade"))

    assert query(pg_url, validity) == [(True,)]
    indexes = query(
        pg_url,
        "SELECT indexname FROM pg_indexes WHERE tablename = 'users' "
        "AND indexdef LIKE '%(display_name)%'",
    )
    assert indexes == [("ix_users_display_name",)]
    assert_ok(project.invoke("dev.check"))


def test_not_null_that_fails_on_a_null_row_reruns_after_the_backfill(project, scripts, pg_url):
    """VALIDATE finds the NULL and the revision fails, leaving its NOT VALID check behind; once
    the row is fixed, the re-run drops that leftover and completes."""
    write_revision(project, pg_url, "not_null")
    query_commit(
        pg_url,
        "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'Ann')",
        "INSERT INTO projects (name, owner_id) VALUES ('no description', 1)",
    )

    failed = project.invoke("dev.upgrade")

    assert failed.code == ExitCode.FAILED, failed.output
    assert "ck_projects_description_not_null" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.output
    leftover = "SELECT convalidated FROM pg_constraint WHERE conname LIKE '%not_null'"
    assert query(pg_url, leftover) == [(False,)]

    query_commit(pg_url, "UPDATE projects SET description = '' WHERE description IS NULL")
    assert_ok(project.invoke("dev.upgrade"))

    assert_applied(pg_url, "not_null")
    assert_ok(project.invoke("dev.check"))


def query_commit(url: str, *statements: str) -> None:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sqlalchemy.text(statement))
    finally:
        engine.dispose()


@pytest.mark.parametrize(("setting", "safe"), [("", True), ("false", False)])
def test_plain_alembic_autogenerate_reads_the_same_setting(project, scripts, pg_url, setting, safe):
    """`alembic revision --autogenerate` goes through the same env.py and setting."""
    prepare(project, pg_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", "tests.models_safe:index")
    if setting:
        project.setenv("INVOKE_MIGRATIONS_SAFE_REVISIONS", setting)
    files = scripts.files()

    result = project.run(
        venv_bin("alembic"), "-c", str(scripts.ini), "revision", "--autogenerate", "-m", "plain"
    )

    assert result.code == 0 and "Traceback" not in result.output, result.output
    (new,) = scripts.files() - files
    source = (scripts.versions / new).read_text()
    assert ("postgresql_concurrently=True" in source) is safe
    assert ("drop_invalid_index" in source) is safe


def test_offline_sql_shows_the_concurrent_build_outside_a_transaction(project, scripts, pg_url):
    """`--sql` cannot read the catalog: the leftover check is a comment for whoever runs it."""
    write_revision(project, pg_url, "index")

    result = project.invoke("dev.upgrade", "--sql", "--rev", f"{HEAD}:head")

    assert_ok(result)
    sql = result.stdout
    assert (
        "-- ix_users_display_name: drop it first (DROP INDEX CONCURRENTLY) only if a failed "
        "build left it INVALID (pg_index.indisvalid = false)"
    ) in sql
    build = "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_users_display_name ON users (display_name);"
    assert build in sql
    before, after = sql.split(build)
    assert before.rfind("COMMIT;") > before.rfind("BEGIN;")  # outside the revision's transaction
    assert "BEGIN;" in after


def test_plain_alembic_upgrade_runs_under_the_lock_timeout_too(project, scripts, pg_url):
    """Plain `alembic upgrade` sets the environment's lock_timeout like the tasks: a concurrent
    build stuck behind a writer's open transaction gives up instead of waiting for it."""
    write_revision(project, pg_url, "index")
    project.setenv("INVOKE_MIGRATIONS_ENVIRONMENTS_DEVELOPMENT_POSTGRES_LOCK_TIMEOUT", "500ms")
    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.connect() as writer:
            writer.execute(
                sqlalchemy.text(
                    "INSERT INTO users (email, display_name) VALUES ('a@example.com', 'Ann')"
                )
            )
            result = project.run(
                venv_bin("alembic"), "-c", str(scripts.ini), "upgrade", "head", timeout=60
            )
            writer.rollback()
    finally:
        engine.dispose()

    assert result.code != 0
    assert "lock timeout" in result.output
    assert query(pg_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]


def test_a_removed_index_is_dropped_and_restored_concurrently(project, scripts, pg_url):
    _, source = write_revision(project, pg_url, "without_index")

    assert (
        body(source, "upgrade")
        == textwrap.dedent(
            """
        # DROP INDEX CONCURRENTLY: writers keep going; it cannot run in a transaction.
        with op.get_context().autocommit_block():
            op.drop_index(
                op.f("ix_projects_name"),
                table_name="projects",
                postgresql_concurrently=True,
                if_exists=True,
            )
        """
        ).strip()
    )
    downgrade = body(source, "downgrade")
    assert 'op.drop_invalid_index("ix_projects_name", "projects")' in downgrade
    assert "postgresql_concurrently=True" in downgrade and "if_not_exists=True" in downgrade
    assert_ok(project.invoke("dev.upgrade"))
    assert_ok(project.invoke("dev.downgrade", "--rev", "-1", "--yes"))
    assert query(pg_url, "SELECT 1 FROM pg_indexes WHERE indexname = 'ix_projects_name'") == [(1,)]
