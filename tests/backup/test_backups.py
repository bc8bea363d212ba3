"""`local.backup` and `local.restore`, and the `tasks.backup.backups` routines the shared
environments
call before risky operations. A restore must give back exactly what was saved: the tests compare
row checksums and schemas before the backup and after the restore."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import stat
import sys
from pathlib import Path

import pexpect
import pytest
import sqlalchemy as sa

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.sync_scenarios import rich


@pytest.fixture
def url(any_url: str) -> str:
    return any_url


def populate(url: str) -> None:
    """The rich model set with rows in every table (enums, JSON, binary, defaults)."""
    metadata = rich()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            metadata.create_all(connection)
            connection.execute(
                metadata.tables["parent"].insert(),
                [{"name": f"parent {i}", "code": f"c{i}"} for i in range(1, 6)],
            )
            connection.execute(
                metadata.tables["child"].insert(),
                [{"parent_id": 1 + i % 5, "label": f"label {i}"} for i in range(10)],
            )
            connection.execute(
                metadata.tables["item"].insert(),
                [
                    {
                        "id": i + 1,
                        "parent_id": 1 + i % 5,
                        "title": f"item {i}",
                        "colour": "green",
                        "price": i * 1.5,
                        "payload": {"n": i, "tags": ["a", "b"]},
                        "blob": bytes(range(i, i + 16)),
                    }
                    for i in range(20)
                ],
            )
    finally:
        engine.dispose()


def checksums(url: str) -> dict[str, str]:
    """Every table's rows, in a stable order, as one digest per table."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            metadata = sa.MetaData()
            metadata.reflect(connection)
            return {
                name: hashlib.sha256(
                    repr(
                        sorted(repr(tuple(row)) for row in connection.execute(table.select()))
                    ).encode()
                ).hexdigest()
                for name, table in metadata.tables.items()
            }
    finally:
        engine.dispose()


def change_everything(url: str) -> None:
    """What happens between a backup and a restore: rows come and go, tables appear."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM child WHERE id > 5"))
            connection.execute(sa.text("UPDATE parent SET name = 'renamed' WHERE id = 1"))
            connection.execute(sa.text("INSERT INTO parent (name, code) VALUES ('new', 'n')"))
            connection.execute(sa.text("CREATE TABLE after_backup (id INTEGER PRIMARY KEY)"))
            connection.execute(sa.text("ALTER TABLE child ADD COLUMN added_later INTEGER"))
    finally:
        engine.dispose()


def backup_path(result) -> Path:
    match = re.search(r"backup written to (\S+) \(", result.stdout)
    assert match, result.output
    return Path(match.group(1))


def test_restore_gives_back_exactly_what_was_saved(project, url):
    populate(url)
    project.setenv("DATABASE_URL_LOCAL", url)
    rows, schema = checksums(url), schema_snapshot(url)

    backed_up = project.invoke("local.backup")
    assert backed_up.code == 0, backed_up.output
    path = backup_path(backed_up)
    change_everything(url)
    assert checksums(url) != rows

    restored = project.invoke("local.restore", "--file", str(path), "--yes")

    assert restored.code == 0, restored.output
    assert f"restored from {path}" in restored.stdout
    assert schema_snapshot(url) == schema
    assert checksums(url) == rows


def test_serial_counters_come_back_too(project, pg_url):
    populate(pg_url)
    project.setenv("DATABASE_URL_LOCAL", pg_url)
    path = backup_path(project.invoke("local.backup"))
    change_everything(pg_url)  # advances parent's sequence

    assert project.invoke("local.restore", "--file", str(path), "--yes").code == 0

    engine = sa.create_engine(pg_url)
    with engine.begin() as connection:
        new_id = connection.execute(
            sa.text("INSERT INTO parent (name, code) VALUES ('after', 'x') RETURNING id")
        ).scalar()
    engine.dispose()
    assert new_id == 6


def test_backup_file_is_named_by_environment_database_and_utc_time(project, url):
    populate(url)
    project.setenv("DATABASE_URL_LOCAL", url)

    backed_up = project.invoke("local.backup")

    path = backup_path(backed_up)
    database = sa.make_url(url).database
    name = Path(database).stem if "sqlite" in url else database
    suffix = {"sqlite": "sqlite3", "postgresql": "dump", "mysql": "sql"}[
        sa.make_url(url).get_backend_name()
    ]
    assert re.fullmatch(rf"local-{re.escape(name)}-\d{{8}}T\d{{6}}Z\.{suffix}", path.name)
    assert path.parent == project.backup_dir and path.is_file()
    assert [p.name for p in project.backup_dir.iterdir()] == [path.name]  # no .partial left
    assert project.log_records()[-1]["details"]["backup"] == str(path)


def test_two_backups_in_the_same_second_do_not_collide(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    populate(url)
    project.setenv("DATABASE_URL_LOCAL", url)

    first = backup_path(project.invoke("local.backup"))
    second = backup_path(project.invoke("local.backup"))

    assert first != second and first.exists() and second.exists()


def test_sqlite_backup_is_consistent_while_the_file_is_in_use(project, tmp_path):
    path = tmp_path / "local.sqlite3"
    url = f"sqlite:///{path}"
    populate(url)
    rows = checksums(url)
    project.setenv("DATABASE_URL_LOCAL", url)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO parent (name, code) VALUES ('uncommitted', 'u')")
    try:
        backed_up = project.invoke("local.backup")
    finally:
        writer.execute("ROLLBACK")
        writer.close()

    assert backed_up.code == 0, backed_up.output
    assert checksums(f"sqlite:///{backup_path(backed_up)}") == rows


def test_restore_asks_first(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    populate(url)
    project.setenv("DATABASE_URL_LOCAL", url)
    path = backup_path(project.invoke("local.backup"))
    change_everything(url)
    changed = checksums(url)

    refused = project.invoke("local.restore", "--file", str(path))

    assert refused.code == 3, refused.output
    assert "needs confirmation" in refused.stderr and "--yes" in refused.stderr
    assert checksums(url) == changed


def test_restore_can_back_up_the_current_state_first(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    populate(url)
    project.setenv("DATABASE_URL_LOCAL", url)
    path = backup_path(project.invoke("local.backup"))
    change_everything(url)
    changed = checksums(url)

    restored = project.invoke("local.restore", "--file", str(path), "--yes", "--backup")

    assert restored.code == 0, restored.output
    safety = backup_path(restored)
    assert safety != path and checksums(f"sqlite:///{safety}") == changed


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((), "restore needs --file PATH"),
        (("--file", "/nonexistent/backup.dump"), "backup file /nonexistent/backup.dump does not"),
    ],
)
def test_restore_needs_an_existing_file(project, tmp_path, arguments, message):
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    populate(url)
    project.setenv("DATABASE_URL_LOCAL", url)
    rows = checksums(url)

    result = project.invoke("local.restore", *arguments, "--yes")

    assert result.code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert checksums(url) == rows


def test_restore_refuses_a_file_it_did_not_write(project, url, tmp_path):
    populate(url)
    project.setenv("DATABASE_URL_LOCAL", url)
    rows = checksums(url)
    garbage = tmp_path / "notes.txt"
    garbage.write_text("these are not the rows you are looking for\n")

    result = project.invoke("local.restore", "--file", str(garbage), "--yes")

    assert result.code == 2, result.output
    assert "is not a backup this tool wrote" in result.stderr
    assert checksums(url) == rows


def test_restore_refuses_another_databases_backup(project, pg_url, tmp_path):
    sqlite_url = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    populate(sqlite_url)
    project.setenv("DATABASE_URL_LOCAL", sqlite_url)
    path = backup_path(project.invoke("local.backup"))
    populate(pg_url)
    rows = checksums(pg_url)
    project.setenv("DATABASE_URL_LOCAL", pg_url)

    result = project.invoke("local.restore", "--file", str(path), "--yes")

    assert result.code == 2, result.output
    assert "is a SQLite backup; the local database is PostgreSQL" in result.stderr
    assert checksums(pg_url) == rows


def test_restore_refuses_an_unreadable_file(project, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    populate(url)
    project.setenv("DATABASE_URL_LOCAL", url)
    path = backup_path(project.invoke("local.backup"))
    path.chmod(0)

    result = project.invoke("local.restore", "--file", str(path), "--yes")

    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert result.code == 2 and "cannot read" in result.stderr, result.output


def test_truncated_backups_change_nothing(project, url, tmp_path):
    populate(url)
    project.setenv("DATABASE_URL_LOCAL", url)
    path = backup_path(project.invoke("local.backup"))
    truncated = tmp_path / f"truncated{path.suffix}"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    change_everything(url)
    rows, schema = checksums(url), schema_snapshot(url)

    result = project.invoke("local.restore", "--file", str(truncated), "--yes")

    assert result.code in {1, 2}, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith("local.restore: ")
    assert checksums(url) == rows and schema_snapshot(url) == schema


def test_a_missing_dump_tool_is_a_clear_error(project, url, tmp_path):
    if "sqlite" in url:
        pytest.skip("SQLite backups need no external tool")
    populate(url)
    project.setenv("DATABASE_URL_LOCAL", url)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    project.setenv("PATH", str(empty))

    result = project.invoke("local.backup")

    assert result.code == 2, result.output
    tool = "pg_dump" if "postgresql" in url else "mariadb-dump or mysqldump"
    assert f"local.backup: {tool} not found on PATH" in result.stderr
    assert not project.backup_dir.exists() or not any(project.backup_dir.iterdir())


def test_pg_dump_gets_the_password_from_the_environment_only(project, pg_url, tmp_path):
    populate(pg_url)
    password = "s3cret-Pa55word"  # the server trusts local connections and ignores it
    url = sa.make_url(pg_url).set(password=password).render_as_string(hide_password=False)
    project.setenv("DATABASE_URL_LOCAL", url)
    shims = tmp_path / "shims"
    shims.mkdir()
    seen = tmp_path / "seen.txt"
    real = Path(os.popen("command -v pg_dump").read().strip())  # noqa: S605
    shim = shims / "pg_dump"
    shim.write_text(
        f'#!/bin/sh\necho "argv: $*" > {seen}\necho "password: $PGPASSWORD" >> {seen}\n'
        f'exec {real} "$@"\n'
    )
    shim.chmod(0o755)
    project.setenv("PATH", f"{shims}:{os.environ['PATH']}")

    result = project.invoke("local.backup")

    assert result.code == 0, result.output
    argv, env = seen.read_text().splitlines()
    assert password not in argv and env == f"password: {password}"
    assert password not in result.output and password not in backup_path(result).name
    assert password not in project.log_file.read_text()


def test_backup_into_an_unusable_directory_is_a_clear_error(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    populate(url)
    project.setenv("DATABASE_URL_LOCAL", url)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    project.setenv("INVOKE_MIGRATIONS_BACKUP_DIR", str(blocker / "backups"))

    result = project.invoke("local.backup")

    assert result.code == 2, result.output
    assert "local.backup: cannot create the backup directory" in result.stderr


def test_backup_of_a_missing_sqlite_file_fails_clearly(project, tmp_path):
    project.setenv("DATABASE_URL_LOCAL", f"sqlite:///{tmp_path / 'never.sqlite3'}")

    result = project.invoke("local.backup")

    # A read (the backup reads the database) never creates the file: one line, exit 2.
    assert result.code == ExitCode.USAGE, result.output
    assert "never.sqlite3 does not exist" in result.stderr, result.stderr
    assert not (tmp_path / "never.sqlite3").exists()


def test_shared_environments_can_call_the_routines_directly(pg_url, tmp_path, monkeypatch):
    """`create_backup` / `restore_backup` take a Session for any environment, no collection."""
    from tasks.backup.backups import create_backup, restore_backup
    from tasks.core.confirmation import Confirmer
    from tasks.core.console import Console
    from tasks.core.run_log import RunRecord
    from tasks.core.session import Session
    from tasks.core.settings import DEFAULTS, settings_from_mapping

    populate(pg_url)
    rows = checksums(pg_url)
    settings = settings_from_mapping({**DEFAULTS, "backup_dir": str(tmp_path / "shared")})
    monkeypatch.setenv("DATABASE_URL_STAGING", pg_url)
    output = tmp_path / "out.txt"
    with output.open("w") as stream:
        session = Session(
            settings=settings,
            record=RunRecord("staging", "staging.upgrade", {}),
            confirmer=Confirmer(assume_yes=True),
            console=Console(stdout=stream, stderr=stream),
        )
        path = create_backup(session)
        change_everything(pg_url)
        restore_backup(session, path)

    assert path.parent == tmp_path / "shared" and path.name.startswith("staging-")
    assert session.record.details["backup"] == str(path)
    assert checksums(pg_url) == rows


@pytest.mark.mysql
def test_mysql_tools_get_the_password_from_the_environment_only(project, mysql_url, tmp_path):
    """A MariaDB user with a password: the dump and the restore authenticate through
    MYSQL_PWD, and the password reaches no command line, output, log or file name."""
    password = "s3cret-Pa55word"
    server = sa.make_url(mysql_url)
    user = f"u{server.database[-8:]}"
    admin = sa.create_engine(server.set(database="test"))
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
        connection.execute(sa.text(f"GRANT ALL ON `{server.database}`.* TO '{user}'@'%'"))
    try:
        url = server.set(username=user, password=password).render_as_string(hide_password=False)
        populate(url)
        rows = checksums(url)
        project.setenv("DATABASE_URL_LOCAL", url)
        shims, seen = tmp_path / "shims", tmp_path / "seen.txt"
        shims.mkdir()
        for tool in ("mariadb-dump", "mariadb"):
            real = os.popen(f"command -v {tool}").read().strip()  # noqa: S605
            shim = shims / tool
            shim.write_text(f'#!/bin/sh\necho "{tool}: $*" >> {seen}\nexec {real} "$@"\n')
            shim.chmod(0o755)
        project.setenv("PATH", f"{shims}:{os.environ['PATH']}")

        backed_up = project.invoke("local.backup")
        assert backed_up.code == 0, backed_up.output
        path = backup_path(backed_up)
        change_everything(url)
        restored = project.invoke("local.restore", "--file", str(path), "--yes")

        assert restored.code == 0, restored.output
        assert checksums(url) == rows
        calls = seen.read_text()
        assert "mariadb-dump: " in calls and "mariadb: " in calls
        assert password not in calls
        everything = backed_up.output + restored.output + project.log_file.read_text()
        assert password not in everything and password not in path.name
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


@pytest.mark.parametrize(("answer", "code"), [("n", 3), ("y", 0)])
def test_restore_asks_at_a_terminal(project, tmp_path, answer, code):
    """At a terminal the operator answers; only "y" restores."""
    url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    populate(url)
    project.setenv("DATABASE_URL_LOCAL", url)
    rows = checksums(url)
    path = backup_path(project.invoke("local.backup"))
    change_everything(url)
    changed = checksums(url)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "invoke", "local.restore", "--file", str(path)],
        cwd=str(Path(__file__).resolve().parents[2]),
        env=dict(os.environ),
        encoding="utf-8",
        timeout=60,
    )
    child.expect(r"with the backup \S+\. Continue\? \[y/N\] ")
    child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == code, child.before
    assert checksums(url) == (rows if answer == "y" else changed)


def test_pg_tools_get_credentials_from_url_parameters_too():
    """libpq accepts ?user= and ?password=; pg_dump must authenticate as the migration does."""
    from sqlalchemy.engine import make_url

    from tasks.backup.postgres import pg_environment

    from_query = pg_environment(
        make_url("postgresql+psycopg2://h:5433/db?user=app&password=q%40p"), 5
    )
    assert (from_query["PGUSER"], from_query["PGPASSWORD"]) == ("app", "q@p")
    assert (from_query["PGHOST"], from_query["PGPORT"], from_query["PGDATABASE"]) == (
        "h",
        "5433",
        "db",
    )

    userinfo_wins = pg_environment(make_url("postgresql+psycopg2://u:pw@h/db?password=other"), 5)
    assert userinfo_wins["PGPASSWORD"] == "pw"
