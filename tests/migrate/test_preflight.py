"""`<env>.preflight`, the deploy gate: every check prints, and the exit code names the first that
failed (10 several heads, 11 unknown database revision, 12 destructive or blocking statements
pending, 13 models differ from the migration history, 0 all good)."""

from __future__ import annotations

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import FIRST, HEAD, assert_ok, prepare, sqlite_url
from tests.revision_chains import Chain, repository_chain

REBUILD_INDEX = """
op.drop_index("ix_projects_name", table_name="projects")
op.create_index("ix_projects_name", "projects", ["name"])
"""
NOT_IN_THE_MODELS = 'op.add_column("users", sa.Column("nickname", sa.Text, nullable=True))'


@pytest.fixture(params=["postgresql", "sqlite"])
def staging(request, project):
    """A staging database one revision behind the repository's head."""
    url = (
        request.getfixturevalue("pg_url")
        if request.param == "postgresql"
        else sqlite_url(project.tmp / "staging.sqlite3")
    )
    prepare(project, url, FIRST)
    project.setenv("DATABASE_URL_STAGING", url)
    return url


@pytest.fixture
def chain(project) -> Chain:
    return repository_chain(project.tmp / "scripts").use(project)


def preflight(project, *argv: str):  # type: ignore[no-untyped-def]
    return project.invoke("staging.preflight", *argv)


def check_lines(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """'ok' or 'FAILED' per check, keyed by the first word of its line."""
    lines = {}
    for line in result.stdout.splitlines():
        status, _, text = line.strip().partition(" ")
        if status in {"ok", "FAILED"}:
            lines[text.strip().split(":")[0].split()[0]] = status
    return lines


def test_all_good_exits_0_and_lists_the_pending_revisions(project, staging, chain):
    before = schema_snapshot(staging)

    result = preflight(project)

    assert_ok(result)
    assert check_lines(result) == {
        "heads": "ok",
        "database": "ok",
        "1": "ok",  # "1 pending revision, ..."
        "checksums": "ok",  # applied revisions unchanged since they were applied
        "models": "ok",
    }
    assert f"{HEAD} add memberships" in result.stdout
    assert schema_snapshot(staging) == before  # read-only


def test_several_heads_exit_10(project, staging, chain):
    chain.scripts.add_branch()

    result = preflight(project)

    assert result.code == ExitCode.PREFLIGHT_HEADS, result.output
    assert check_lines(result)["heads"] == "FAILED"
    assert "preflight failed: heads:" in result.stderr
    # An explicit target is allowed with several heads.
    assert preflight(project, "--rev", HEAD).code != ExitCode.PREFLIGHT_HEADS


def test_unknown_database_revision_exits_11(project, staging, chain):
    engine = sqlalchemy.create_engine(staging)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE alembic_version SET version_num = 'deadbeef0000'")
        )
    engine.dispose()

    result = preflight(project)

    assert result.code == ExitCode.PREFLIGHT_UNKNOWN_REVISION, result.output
    assert check_lines(result)["database"] == "FAILED"
    assert "deadbeef0000" in result.stderr and "unknown" in result.stderr


def test_destructive_pending_exits_12_unless_allowed(project, staging, chain):
    revision = chain.add("f10000000001", "rebuild an index", REBUILD_INDEX, record=False)

    result = preflight(project)

    assert result.code == ExitCode.PREFLIGHT_DESTRUCTIVE, result.output
    assert f"{revision} rebuild an index: drop-index" in result.stdout
    assert "--allow-destructive" in result.stderr
    assert_ok(preflight(project, "--allow-destructive"))


@pytest.mark.postgres
def test_lock_heavy_pending_exits_12_on_postgresql(project, pg_url, chain):
    prepare(project, pg_url)
    project.setenv("DATABASE_URL_STAGING", pg_url)
    revision = chain.add(
        "f20000000001",
        "index on an existing table",
        'op.create_index("ix_users_display_name", "users", ["display_name"])\n'
        'op.drop_index("ix_users_display_name", table_name="users")',
        record=False,
    )

    result = preflight(project)

    assert result.code == ExitCode.PREFLIGHT_DESTRUCTIVE, result.output
    assert "require-concurrent-index-creation" in result.stdout
    assert revision in result.stdout


def test_models_differing_from_the_history_exit_13(project, staging, chain):
    chain.add("f30000000001", "nickname the models lack", NOT_IN_THE_MODELS, record=False)

    result = preflight(project)

    assert result.code == ExitCode.PREFLIGHT_MODELS, result.output
    assert check_lines(result)["models"] == "FAILED"
    assert "users.nickname" in result.stderr


def test_every_check_runs_and_the_first_failure_sets_the_code(project, staging, chain):
    chain.add("f40000000001", "destructive", REBUILD_INDEX, record=False)
    chain.add("f40000000002", "models differ", NOT_IN_THE_MODELS, record=False)

    result = preflight(project)

    assert result.code == ExitCode.PREFLIGHT_DESTRUCTIVE
    lines = check_lines(result)
    assert lines["models"] == "FAILED" and lines["heads"] == "ok"


@pytest.mark.postgres
def test_a_postgresql_only_history_is_built_on_postgresql(project, pg_url, chain):
    """A revision SQLite cannot run must not fail the models check of a PostgreSQL database."""
    prepare(project, pg_url)
    project.setenv("DATABASE_URL_STAGING", pg_url)
    chain.add("f50000000001", "tune", "op.execute(\"SET LOCAL work_mem = '64MB'\")", record=False)

    result = preflight(project)

    assert_ok(result)
    assert check_lines(result)["models"] == "ok"
