"""SQLite backups: the online backup API, a consistent copy of a database in use, restored the
same way (every page of the file replaced in one step)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.backup.tools import BackupError
from tasks.core.errors import DatabaseError, UsageError
from tasks.core.session import Session

if TYPE_CHECKING:
    from tasks.core.environments import Environment


def _sqlite_path(environment: Environment) -> Path:
    database = environment.url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        raise UsageError(f"the {environment.name} SQLite database is not a file; nothing to copy")
    return Path(database)


def backup(session: Session, target: Path) -> None:
    import sqlite3

    source = _sqlite_path(session.environment)
    if not source.exists():
        raise BackupError(f"database file {source} does not exist; nothing to back up")
    try:
        copy_sqlite(source, target, timeout=session.settings.connect_timeout)
    except sqlite3.Error as error:
        raise BackupError(f"cannot back up {source}: {error}") from None


def validate(_session: Session, path: Path) -> None:
    import sqlite3

    try:
        reader = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            result = reader.execute("PRAGMA quick_check").fetchone()
        finally:
            reader.close()
    except sqlite3.Error as error:
        raise UsageError(f"{path} is not a usable SQLite backup: {error}") from None
    if not result or result[0] != "ok":
        raise UsageError(f"{path} is damaged: {result[0] if result else 'no answer'}")


def restore(session: Session, path: Path) -> None:
    import sqlite3

    target = _sqlite_path(session.environment)
    try:
        copy_sqlite(path, target, timeout=session.settings.connect_timeout)
    except sqlite3.Error as error:
        raise DatabaseError(f"cannot restore into {target}: {error}; nothing was changed") from None


def copy_sqlite(source: Path, target: Path, *, timeout: float) -> None:
    """Copy `source`, opened read-only, into `target` with SQLite's online backup API: a
    consistent snapshot of a database in use, and every page of `target` replaced in one step."""
    import sqlite3

    reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)
    with (
        contextlib.closing(reader),
        contextlib.closing(sqlite3.connect(target, timeout=timeout)) as writer,
    ):
        reader.backup(writer)
