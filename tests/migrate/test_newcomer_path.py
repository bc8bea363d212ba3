"""Issue 18.2, the newcomer trap: after `local.sync` builds a database from the models,
`local.current`, `local.upgrade`, the sync report and `revision --autogenerate` agree and lead
somewhere; autogenerate compares the models with the history (a throwaway database), so it
needs no development database and a drifted one leaks nothing into a revision."""

from __future__ import annotations

import sqlite3

import pytest

from tests.helpers import HEAD, ScriptCopy, assert_ok, copy_scripts


@pytest.fixture
def scripts(project, tmp_path) -> ScriptCopy:
    copy = copy_scripts(tmp_path / "scripts")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    return copy


def version_of(path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


def test_sync_on_an_empty_database_records_the_head_and_everything_agrees(
    project, scripts, tmp_path
):
    synced = project.invoke_subprocess("local.sync")
    assert_ok(synced)
    assert f"recorded revision {HEAD}" in synced.stdout
    assert version_of(tmp_path / "local.sqlite3") == [HEAD]

    current = project.invoke_subprocess("local.current")
    assert_ok(current)
    assert "local: at head" in current.stdout

    upgraded = project.invoke_subprocess("local.upgrade")
    assert_ok(upgraded)
    assert "nothing to upgrade" in upgraded.stdout

    revision = project.invoke_subprocess("local.revision", "-m", "nothing", "--autogenerate")
    assert_ok(revision)
    assert "no changes between the models and the history" in revision.stdout
    assert len(scripts.files()) == 2


def test_models_ahead_of_the_history_get_one_next_step_that_works(project, scripts, tmp_path):
    project.setenv("INVOKE_MIGRATIONS_METADATA", "tests.models_changed:metadata")
    synced = project.invoke_subprocess("local.sync")
    assert_ok(synced)
    assert "next: `invoke local.revision -m MESSAGE --autogenerate`" in synced.stdout
    current = project.invoke_subprocess("local.current")
    assert "no revision recorded" in current.stdout and "`invoke local.sync`" in current.stdout

    revision = project.invoke_subprocess("local.revision", "-m", "notes", "--autogenerate")
    assert_ok(revision)
    assert "add_table audit_notes" in revision.stdout, revision.stdout
    assert "add_column users.nickname" in revision.stdout
    again = project.invoke_subprocess("local.sync")
    assert_ok(again)
    assert "recorded revision" in again.stdout
    assert "local: at head" in project.invoke_subprocess("local.current").stdout


def test_autogenerate_needs_no_development_database(project, scripts):
    """No DATABASE_URL_DEVELOPMENT at all: the history is the comparison."""
    project.setenv("INVOKE_MIGRATIONS_METADATA", "tests.models_changed:metadata")
    result = project.invoke_subprocess("dev.revision", "-m", "notes", "--autogenerate")

    assert_ok(result)
    assert "add_table audit_notes" in result.stdout


def test_a_drifted_database_leaks_nothing_into_a_revision(project, scripts, tmp_path):
    """A development database with a hand-made table and column, at head: autogenerate
    against the history writes nothing (against the database it would drop them)."""
    dev = tmp_path / "dev.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{dev}")
    assert_ok(project.invoke_subprocess("dev.upgrade"))
    with sqlite3.connect(dev) as connection:
        connection.execute("CREATE TABLE scratch_by_hand (id INTEGER PRIMARY KEY)")
        connection.execute("ALTER TABLE users ADD COLUMN hand_added TEXT")

    result = project.invoke_subprocess("dev.revision", "-m", "nothing", "--autogenerate")

    assert_ok(result)
    assert "no changes between the models and the history" in result.stdout
    from_database = project.invoke_subprocess(
        "dev.revision", "-m", "drift", "--autogenerate", "--against-database"
    )
    assert_ok(from_database)
    assert "remove_table scratch_by_hand" in from_database.stdout, from_database.stdout
