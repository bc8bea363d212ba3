"""Backups and restores of an environment's database: one file per backup, one call each way.

`local.backup`, `local.restore`, `local.sync --backup` and `local.reset --backup` use these, and
so do the shared environments before risky operations; nothing here knows about a collection.
This module dispatches on the dialect; each dialect's routines live in their own module:

- `tasks.backup.sqlite`: the online backup API (`sqlite3.Connection.backup`), a consistent copy
  even while another process writes; restored the same way, replacing the whole file in one step.
- `tasks.backup.postgres`: `pg_dump --format=custom`; restored by `pg_restore` piped into `psql`
  inside one transaction that first removes what the backup does not have, and commits only if
  pg_restore read the whole archive, so a restore is exact or does not happen.
- `tasks.backup.mysql` (MySQL and MariaDB): `mariadb-dump` (or `mysqldump`) in one consistent
  transaction; restored with the `mariadb` (or `mysql`) client after dropping the current
  tables. MySQL cannot roll DDL back, so the file is checked to be complete before anything is
  dropped.

A new dialect is one module with `backup`, `validate` and `restore` (each `(session, path)`),
registered in the three tables at the end of this file and in `SUFFIXES`. Running the dump
tools (progress, errors, dying with the task) is `tasks.backup.tools`; the files themselves
(names, temporary `.partial` files, the directory) are `tasks.backup.files`.

Passwords reach the tools through PGPASSWORD / MYSQL_PWD, never their command line, and never
appear in file names (environment, database name and UTC time only). Files are written under a
temporary name and renamed when complete, so a failed backup leaves no file that looks good.

This module is imported by task modules that `invoke --list` loads: keep its top free of heavy
imports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.backup import mysql, postgres, sqlite
from tasks.backup.files import (
    backup_directory,
    complete,
    existing_file,
    remove_stale_partials,
    reserve,
    safe_name,
)
from tasks.backup.tools import human_size
from tasks.core.errors import UsageError
from tasks.core.session import Session

if TYPE_CHECKING:
    from tasks.core.environments import Environment


SUFFIXES = {"sqlite": ".sqlite3", "postgresql": ".dump", "mysql": ".sql", "mariadb": ".sql"}
SQLITE_HEADER = b"SQLite format 3\x00"
PG_CUSTOM_HEADER = b"PGDMP"
MYSQL_HEADERS = (b"-- MySQL dump", b"-- MariaDB dump", b"/*M!999999\\- enable the sandbox mode")


def create_backup(session: Session) -> Path:
    """Write a backup of the session's database into the backup directory and return its path."""
    environment = session.environment
    dialect = _dialect(environment)
    directory = backup_directory(session.settings.backup_dir)
    remove_stale_partials(directory)
    path, partial = reserve(directory / backup_file_name(environment, datetime.now(UTC)))
    try:
        _DUMPERS[dialect](session, partial)
        complete(partial, path)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    session.record.details["backup"] = str(path)
    session.console.line(
        f"{environment.name}: backup written to {path} ({human_size(path.stat().st_size)})"
    )
    return path


def restore_backup(session: Session, path: Path) -> None:
    """Replace the session's database with the backup at `path`, after confirmation.

    The file is checked first (exists, readable, the right kind for this database, complete),
    so a bad file is refused before the question is asked and before anything changes.
    """
    _restore(session, path, backup_first=False)


def restore_with_backup(session: Session, path: Path, *, backup: bool) -> None:
    """`local.restore`: like `restore_backup`, optionally backing the current state up first
    (after the confirmation, so a declined restore writes nothing)."""
    _restore(session, path, backup_first=backup)


def _restore(session: Session, path: Path, *, backup_first: bool) -> None:
    environment = session.environment
    dialect = _dialect(environment)
    path = existing_file(path)
    kind = backup_kind(path)
    if kind != _family(dialect):
        raise UsageError(
            f"{path} is a {_FAMILY_NAMES[kind]} backup; the {environment.name} database is "
            f"{_FAMILY_NAMES[_family(dialect)]}"
        )
    _VALIDATORS[dialect](session, path)
    session.confirm(
        f"Replace everything in the {environment.name} database ({environment.masked_url}) "
        f"with the backup {path.name}"
    )
    if backup_first:
        create_backup(session)
    _RESTORERS[dialect](session, path)
    session.record.details["restored_from"] = str(path)
    session.console.line(f"{environment.name}: restored from {path}")


def backup_file_name(environment: Environment, when: datetime) -> str:
    """`<environment>-<database>-<UTC timestamp><suffix>`: sortable, and free of secrets."""
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = SUFFIXES[_dialect(environment)]
    return f"{safe_name(environment.name)}-{safe_name(_database_name(environment))}-{stamp}{suffix}"


def backup_kind(path: Path) -> str:
    """Which family of database wrote `path`: sqlite, postgresql or mysql (from its content)."""
    try:
        with path.open("rb") as stream:
            head = stream.read(64)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    if head.startswith(SQLITE_HEADER):
        return "sqlite"
    if head.startswith(PG_CUSTOM_HEADER):
        return "postgresql"
    if head.lstrip().startswith(MYSQL_HEADERS):
        return "mysql"
    raise UsageError(f"{path} is not a backup this tool wrote (unknown format)")


_FAMILY_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MySQL/MariaDB"}


def _dialect(environment: Environment) -> str:
    dialect = environment.dialect
    if dialect not in SUFFIXES:
        raise UsageError(f"backups of {dialect} databases are not supported")
    return dialect


def _family(dialect: str) -> str:
    return "mysql" if dialect in {"mysql", "mariadb"} else dialect


def _database_name(environment: Environment) -> str:
    database = environment.url.database or environment.dialect
    return Path(database).stem if environment.dialect == "sqlite" else database


_DUMPERS: dict[str, Callable[[Session, Path], None]] = {
    "sqlite": sqlite.backup,
    "postgresql": postgres.backup,
    "mysql": mysql.backup,
    "mariadb": mysql.backup,
}


_VALIDATORS: dict[str, Callable[[Session, Path], None]] = {
    "sqlite": sqlite.validate,
    "postgresql": postgres.validate,
    "mysql": mysql.validate,
    "mariadb": mysql.validate,
}


_RESTORERS: dict[str, Callable[[Session, Path], None]] = {
    "sqlite": sqlite.restore,
    "postgresql": postgres.restore,
    "mysql": mysql.restore,
    "mariadb": mysql.restore,
}
