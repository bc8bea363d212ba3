"""`local.sync`, `local.sync --check` and `local.reset`, driven the way a developer runs them.

The database starts from `tests.sync_scenarios.base` with rows in it; the models the task sees
come from INVOKE_MIGRATIONS_METADATA. Row checksums prove data survives; schema snapshots prove
what did not change.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import ROOT, schema_snapshot
from tests.schema.test_sync_vs_alembic import alembic_keys, create_database
from tests.sync_scenarios import SCENARIOS, additive, base


@pytest.fixture
def url(any_url: str) -> str:
    return any_url


@pytest.fixture(params=["sqlite", "postgresql"])
def transactional_url(request, tmp_path) -> str:
    """Dialects whose DDL rolls back (MySQL's does not, so it cannot promise all or nothing)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'local.sqlite3'}"
    return request.getfixturevalue("pg_url")


def use(project, url: str, models: str) -> None:
    project.setenv("DATABASE_URL_LOCAL", url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", f"tests.sync_scenarios:models__{models}")


def checksums(url: str, tables: dict[str, list[str]]) -> dict[str, str]:
    """A digest of each table's rows (the given columns, ordered by id)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            digests = {}
            for table, columns in tables.items():
                quoted = ", ".join(f'"{c}"' if "postgresql" in url else c for c in columns)
                rows = connection.execute(sa.text(f"SELECT {quoted} FROM {table} ORDER BY id"))
                digests[table] = hashlib.sha256(repr(rows.all()).encode()).hexdigest()
            return digests
    finally:
        engine.dispose()


ORIGINAL_COLUMNS = {
    "parent": ["id", "name", "code"],
    "child": ["id", "parent_id", "label", "qty"],
}


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def test_sync_adds_everything_missing_and_keeps_the_rows(project, url):
    create_database(url, base())
    before = checksums(url, ORIGINAL_COLUMNS)
    use(project, url, "additive")

    synced = project.invoke("local.sync")

    assert synced.code == 0, synced.output
    assert "in sync with the models" in synced.stdout
    assert checksums(url, ORIGINAL_COLUMNS) == before
    snapshot = schema_snapshot(url)
    assert "note" in snapshot
    child_columns = [column for column, _type, _null in snapshot["child"]["columns"]]
    assert {"sku", "rank", "owner_id"} <= set(child_columns)
    assert "ix_child_sku" in snapshot["child"]["indexes"]
    assert alembic_keys(url, additive()) == set()

    again = project.invoke("local.sync")
    assert again.code == 0 and "in sync" in again.stdout, again.output
    assert "applied" not in again.stdout
    assert project.invoke("local.sync", "--check").code == 0


def test_constraints_on_existing_tables(project, url):
    create_database(url, base())
    use(project, url, "additive_with_options")

    synced = project.invoke("local.sync")

    if "sqlite" in url:  # the column goes in; the constraints need a batch-mode revision
        assert synced.code == 5, synced.output
        assert "+ applied: column child.owner_id" in synced.stdout
        assert "! unique constraint uq_parent_code" in synced.stdout
        assert "! foreign key fk_child_owner_id_parent" in synced.stdout
        assert "op.batch_alter_table('child')" in synced.stdout
    else:
        assert synced.code == 0, synced.output
        assert "+ applied: unique constraint uq_parent_code on parent(code)" in synced.stdout
        assert project.invoke("local.sync", "--check").code == 0


def test_new_rows_get_the_server_default_of_a_new_not_null_column(project, url):
    create_database(url, base())
    use(project, url, "additive")

    assert project.invoke("local.sync").code == 0

    engine = sa.create_engine(url)
    with engine.connect() as connection:
        ranks = connection.execute(sa.text("SELECT rank FROM child ORDER BY id")).scalars().all()
    engine.dispose()
    assert ranks == [7, 7]


def test_sync_applies_what_it_can_and_reports_the_rest(project, url):
    create_database(url, base())
    use(project, url, "additive_and_type_change")

    synced = project.invoke("local.sync")

    assert synced.code == 5, synced.output
    assert "+ applied: column child.note" in synced.stdout
    assert "! type of parent.name: VARCHAR(50) -> VARCHAR(120)" in synced.stdout
    assert "op.alter_column('parent', 'name', type_=sa.String(length=120))" in synced.stdout
    assert "needs a revision" in synced.stderr
    checked = project.invoke("local.sync", "--check", "--json")
    report = json.loads(checked.stdout)
    kinds = [d["kind"] for table in report["tables"] for d in table["differences"]]
    assert checked.code == 5 and kinds == ["type_changed"]


def test_not_null_column_on_a_table_with_rows_needs_a_revision(project, url):
    create_database(url, base())
    before = schema_snapshot(url)
    use(project, url, "not_null_column_without_default")

    synced = project.invoke("local.sync")

    assert synced.code == 5, synced.output
    assert "! column child.batch INTEGER NOT NULL" in synced.stdout
    reason = "SQLite cannot add a NOT NULL column" if "sqlite" in url else "child has rows"
    assert reason in synced.stdout
    assert schema_snapshot(url) == before


def test_what_depends_on_a_column_that_needs_a_revision_waits_too(project, url):
    create_database(url, base())
    before = schema_snapshot(url)
    use(project, url, "blocked_new_table")

    synced = project.invoke("local.sync")

    assert synced.code == 5, synced.output
    assert "! table reference" in synced.stdout
    assert "why: needs column parent.ext_id, which needs a revision" in synced.stdout
    assert "! unique constraint uq_parent_ext_id" in synced.stdout
    assert schema_snapshot(url) == before


def test_not_null_column_on_an_empty_table_is_added(project, pg_url):
    engine = sa.create_engine(pg_url)
    with engine.begin() as connection:
        base().create_all(connection)
    engine.dispose()
    use(project, pg_url, "not_null_column_without_default")

    synced = project.invoke("local.sync")

    assert synced.code == 0, synced.output
    columns = {c: nullable for c, _t, nullable in schema_snapshot(pg_url)["child"]["columns"]}
    assert columns["batch"] is False


def test_a_failing_apply_leaves_nothing_half_done(project, transactional_url):
    url = transactional_url
    create_database(url, base())
    execute(url, "INSERT INTO parent (id, name, code) VALUES (3, 'third', 'a')")  # duplicate code
    before, rows = schema_snapshot(url), checksums(url, ORIGINAL_COLUMNS)
    use(project, url, "failing_apply")

    synced = project.invoke("local.sync")

    assert synced.code == 1, synced.output
    assert "local.sync: failed at unique index ix_parent_code_unique" in synced.stderr
    assert "nothing was changed (rolled back)" in synced.stderr
    assert "Traceback" not in synced.output
    assert schema_snapshot(url) == before  # the column added first is gone again
    assert checksums(url, ORIGINAL_COLUMNS) == rows


def test_backup_with_a_missing_dump_tool_applies_nothing(project, pg_url, tmp_path):
    create_database(pg_url, base())
    before = schema_snapshot(pg_url)
    use(project, pg_url, "additive")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    project.setenv("PATH", str(empty))

    synced = project.invoke("local.sync", "--backup")

    assert synced.code == 2, synced.output
    assert "pg_dump not found on PATH" in synced.stderr
    assert schema_snapshot(pg_url) == before
    assert not project.backup_dir.exists() or not any(project.backup_dir.iterdir())


def test_backup_into_an_unusable_directory_applies_nothing(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    create_database(url, base())
    before = schema_snapshot(url)
    use(project, url, "additive")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    project.setenv("INVOKE_MIGRATIONS_BACKUP_DIR", str(blocker / "backups"))

    synced = project.invoke("local.sync", "--backup")

    assert synced.code == 2, synced.output
    assert "backup directory" in synced.stderr and "Traceback" not in synced.output
    assert schema_snapshot(url) == before


def test_sync_backup_is_taken_before_applying(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    create_database(url, base())
    before = schema_snapshot(url)
    use(project, url, "missing_column")

    synced = project.invoke("local.sync", "--backup")

    assert synced.code == 0, synced.output
    backups = list(project.backup_dir.iterdir())
    assert len(backups) == 1 and str(backups[0]) in synced.stdout
    assert schema_snapshot(f"sqlite:///{backups[0]}") == before
    assert "note" in [c for c, _t, _n in schema_snapshot(url)["child"]["columns"]]
    finished = project.log_records()[-1]
    assert finished["details"]["backup"] == str(backups[0])
    assert finished["details"]["applied"] == ["column child.note VARCHAR(100) NULL"]


def test_nothing_to_apply_takes_no_backup(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    create_database(url, SCENARIOS["extra_column"].database())
    use(project, url, "extra_column")

    synced = project.invoke("local.sync", "--backup")

    assert synced.code == 5, synced.output
    assert not project.backup_dir.exists() or not any(project.backup_dir.iterdir())


def test_check_changes_nothing(project, url):
    create_database(url, base())
    before = schema_snapshot(url)
    use(project, url, "additive_and_type_change")

    checked = project.invoke("local.sync", "--check")

    assert checked.code == 5, checked.output
    assert "+ column child.note" in checked.stdout and "! type of parent.name" in checked.stdout
    assert schema_snapshot(url) == before


def test_check_of_a_missing_sqlite_file_does_not_create_it(project, tmp_path):
    path = tmp_path / "not-yet.sqlite3"
    use(project, f"sqlite:///{path}", "missing_column")

    checked = project.invoke("local.sync", "--check", "--json")

    assert checked.code == 4, checked.output
    kinds = {d["kind"] for t in json.loads(checked.stdout)["tables"] for d in t["differences"]}
    assert kinds == {"missing_table"}
    assert not path.exists()


def test_sync_json_report(project, url):
    create_database(url, base())
    use(project, url, "additive_and_type_change")

    synced = project.invoke("local.sync", "--json")

    report = json.loads(synced.stdout)
    assert synced.code == report["exit_code"] == 5
    assert report["status"] == "needs_revision"
    assert [item["kind"] for item in report["applied"]] == ["missing_column"]
    (table,) = report["tables"]
    (difference,) = table["differences"]
    assert difference["kind"] == "type_changed" and difference["sync"] is False
    assert difference["operation"].startswith("op.alter_column('parent', 'name'")
    assert difference["alembic"] == [["modify_type", "parent", "name"]]


def test_sqlite_adds_a_foreign_key_together_with_its_new_column(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    create_database(url, base())
    use(project, url, "new_column_with_foreign_key")

    checked = project.invoke("local.sync", "--check")
    assert checked.code == 4 and "(with its column)" in checked.stdout, checked.output
    synced = project.invoke("local.sync")

    assert synced.code == 0, synced.output
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        fks = sa.inspect(connection).get_foreign_keys("child")
    engine.dispose()
    assert {tuple(fk["constrained_columns"]) for fk in fks} == {("parent_id",), ("owner_id",)}


def test_reset_without_confirmation_refuses_and_changes_nothing(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    create_database(url, base())
    before = checksums(url, ORIGINAL_COLUMNS)
    use(project, url, "missing_table")

    refused = project.invoke("local.reset")

    assert refused.code == 3, refused.output
    assert "pass --yes" in refused.stderr
    assert checksums(url, ORIGINAL_COLUMNS) == before


def test_reset_drops_everything_and_recreates_the_models(project, url):
    create_database(url, base())
    execute(url, "CREATE TABLE leftover (id INTEGER PRIMARY KEY)")
    use(project, url, "missing_table_with_enum")

    reset = project.invoke("local.reset", "--yes", "--backup")

    assert reset.code == 0, reset.output
    assert set(schema_snapshot(url)) == {"parent", "child", "item"}
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM parent")).scalar() == 0
    engine.dispose()
    assert len(list(project.backup_dir.iterdir())) == 1
    # MariaDB's `true()` stored as 1 is a known false positive, normalised (issue 17)
    assert project.invoke("local.sync", "--check").code == 0


def test_listing_tasks_imports_no_database_library():
    code = (
        "import sys, tasks; "
        "heavy = {'sqlalchemy', 'alembic', 'tasks.schema.sync', 'tasks.schema.fast_diff'} "
        "& set(sys.modules); "
        "print(sorted(heavy)); sys.exit(1 if heavy else 0)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr


def test_an_everyday_check_does_not_import_alembic(project, tmp_path):
    """Start-up stays light: the project's own models, in sync, compared without Alembic."""
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    project.setenv("DATABASE_URL_LOCAL", url)
    assert project.invoke("local.sync").code == 0
    code = (
        "import sys; from invoke import Program; "
        "Program(name='invoke', binary='invoke').run(['invoke', 'local.sync', '--check'], "
        "exit=False); print('alembic imported' if 'alembic' in sys.modules else 'no alembic')"
    )

    completed = project.run(sys.executable, "-c", code)

    assert "in sync with the models" in completed.stdout, completed.output
    assert completed.stdout.strip().endswith("no alembic")


def test_sync_task_help_documents_the_exit_codes(project):
    helped = project.invoke("--help", "local.sync")
    assert helped.code == 0
    text = " ".join(helped.stdout.split())
    assert "exit 0 in sync, 4 only differences sync can apply, 5 differences that need" in text


def test_backup_path_and_log_carry_no_password(project, pg_url):
    password = "s3cret-Pa55word"  # trust auth ignores it; the tools must still never show it
    url = sa.make_url(pg_url).set(password=password).render_as_string(hide_password=False)
    create_database(pg_url, base())
    use(project, url, "missing_column")

    synced = project.invoke("local.sync", "--backup")

    assert synced.code == 0, synced.output
    assert password not in synced.output
    assert password not in project.log_file.read_text()
    (backup,) = project.backup_dir.iterdir()
    assert password not in backup.name and backup.name.startswith("local-t_test_sync_")
    assert Path(backup).suffix == ".dump"
