"""Backups and restores of an environment's database: one file per backup, one call each way.

`local.backup`, `local.restore`, `local.sync --backup` and `local.reset --backup` use these, and
so do the shared environments before risky operations; nothing here knows about a collection.

- SQLite: the online backup API (`sqlite3.Connection.backup`), a consistent copy even while
  another process writes; restored the same way, which replaces the whole file in one step.
- PostgreSQL: `pg_dump --format=custom`; restored by `pg_restore` piped into `psql` inside one
  transaction that first removes what the backup does not have, and commits only if pg_restore
  read the whole archive, so a restore is exact or does not happen.
- MySQL/MariaDB: `mariadb-dump` (or `mysqldump`) in one consistent transaction; restored with
  the `mariadb` (or `mysql`) client after dropping the current tables. MySQL cannot roll DDL
  back, so the file is checked to be complete before anything is dropped.

Passwords reach the tools through PGPASSWORD / MYSQL_PWD, never their command line, and never
appear in file names (environment, database name and UTC time only). Files are written under a
temporary name and renamed when complete, so a failed backup leaves no file that looks good.

This module is imported by task modules that `invoke --list` loads: keep its top free of heavy
imports.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tasks.core.console import Console, LiveLine, plural
from tasks.core.errors import ConfigError, DatabaseError, MigrationsError, UsageError
from tasks.core.redaction import redact
from tasks.core.session import Session

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from tasks.core.environments import Environment

SUFFIXES = {"sqlite": ".sqlite3", "postgresql": ".dump", "mysql": ".sql", "mariadb": ".sql"}
SQLITE_HEADER = b"SQLite format 3\x00"
PG_CUSTOM_HEADER = b"PGDMP"
MYSQL_HEADERS = (b"-- MySQL dump", b"-- MariaDB dump", b"/*M!999999\\- enable the sandbox mode")
MYSQL_COMPLETE = b"-- Dump completed"
CHUNK = 1 << 16


class BackupError(MigrationsError):
    """A dump or restore tool ran and failed (its first error line, masked, is the message)."""


# --- public entry points ------------------------------------------------------------------------


def create_backup(session: Session) -> Path:
    """Write a backup of the session's database into the backup directory and return its path."""
    environment = session.environment
    dialect = _dialect(environment)
    directory = _backup_directory(session.settings.backup_dir)
    remove_stale_partials(directory)
    path, partial = _reserve(directory / backup_file_name(environment, datetime.now(UTC)))
    try:
        _DUMPERS[dialect](session, partial)
        _complete(partial, path)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    session.record.details["backup"] = str(path)
    session.console.line(f"{environment.name}: backup written to {path} ({_size(path)})")
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
    path = _existing_file(path)
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
    return f"{_safe(environment.name)}-{_safe(_database_name(environment))}-{stamp}{suffix}"


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


# --- shared helpers -----------------------------------------------------------------------------


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


def _safe(text: str) -> str:
    """File-name-safe, and short: file systems refuse names over 255 bytes."""
    return (re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "database")[:80]


def _backup_directory(directory: Path) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the backup directory {directory}: {error.strerror}"
        ) from None
    return directory


def _reserve(wanted: Path) -> tuple[Path, Path]:
    """A free backup path and its `.partial` file, created now. Any OSError on the way (a folder
    without write or search permission, a read-only file system, a name too long) is the
    configuration's problem, said in one line before any tool runs."""
    try:
        path = _free_path(wanted)
    except OSError as error:
        raise ConfigError(
            f"cannot use the backup directory {wanted.parent}: {error.strerror or error}"
        ) from None
    partial = path.with_name(f"{path.name}.{_owner_tag()}.partial")
    _writable(partial)
    return path, partial


def _complete(partial: Path, path: Path) -> None:
    """Give the finished backup its real name; a failure here leaves no file that looks good."""
    try:
        partial.replace(path)
    except OSError as error:
        raise BackupError(
            f"cannot rename the backup to {path}: {error.strerror or error}"
        ) from None


def _writable(path: Path) -> None:
    """Create the file now, so an unwritable directory fails before any tool runs."""
    try:
        path.touch(exist_ok=False)
    except OSError as error:
        raise ConfigError(
            f"cannot write to the backup directory {path.parent}: {error.strerror}"
        ) from None


def _free_path(path: Path) -> Path:
    """Two backups in the same second get -2, -3, ... rather than overwriting each other."""
    candidate, number = path, 1
    while candidate.exists() or any(candidate.parent.glob(f"{candidate.name}.*partial")):
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def _owner_tag() -> str:
    """`<host>-<pid>` of this process, written into partial file names so a later run can tell
    a backup still being written from one whose writer died (SIGKILL, OOM, a lost VM)."""
    return f"{_safe(socket.gethostname())}-{os.getpid()}"


_PARTIAL = re.compile(r"^(?P<final>.+)\.(?P<host>[A-Za-z0-9_.-]+)-(?P<pid>\d+)\.partial$")


def remove_stale_partials(directory: Path) -> list[Path]:
    """Delete the `*.partial` files in `directory` whose writer, on this host, is gone.

    A partial file of a killed backup is as large as the dump got and is never completed.
    Only files named by this tool for this host are judged; a live writer's file, another
    host's (a shared directory), or a name we cannot read is left alone.
    """
    removed = []
    host = _safe(socket.gethostname())
    for candidate in directory.glob("*.partial"):
        match = _PARTIAL.match(candidate.name)
        if match is None or match["host"] != host or _process_alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _die_with_task() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child die with this process, even on SIGKILL.

    Children already share the task's process group, so Ctrl-C and a group-wide SIGTERM reach
    them; a SIGKILL of the task alone would leave pg_dump dumping production, or psql
    committing a restore, after the migration lock was released. Linux's parent-death signal
    closes that gap. Elsewhere (no prctl) None: the group is all we have.
    """
    import ctypes
    import ctypes.util
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl  # looked up here: the child between fork and exec does as little as it can
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the task died before prctl took effect
            os._exit(1)

    return in_child


_PR_SET_PDEATHSIG = 1


def _size(path: Path) -> str:
    size = float(path.stat().st_size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _existing_file(path: Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"backup file {path} does not exist")
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"cannot read backup file {path}: permission denied")
    return path.resolve()


def _tool(*names: str) -> str:
    """The first of `names` on PATH; a missing tool is a configuration problem, said plainly."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    package = "postgresql-client" if names[0].startswith(("pg_", "psql")) else "mariadb-client"
    raise ConfigError(
        f"{' or '.join(names)} not found on PATH: install the client tools "
        f"(for example the {package} package) matching the server's version"
    )


def _tool_error(tool: str, stderr: str) -> BackupError:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
    first = (errors or lines or ["no error output"])[0]
    return BackupError(f"{Path(tool).name} failed: {redact(first)}")


class BackupProgress(LiveLine):
    """What a running backup has done: tables dumped, bytes written, rate and time elapsed.

    On a terminal a live line ticks (twice a second, so a long table still shows its bytes
    growing); elsewhere one plain line per table, so a CI log shows where a slow backup is. A
    15-second silence before a prompt was the complaint this answers.
    """

    interval = 0.5

    def __init__(self, console: Console, target: Path) -> None:
        super().__init__(console)
        self.target = target
        self.tables = 0
        self.current = ""
        self.started = time.monotonic()
        self._live = console.is_terminal()

    def table(self, name: str) -> None:
        """The dump tool moved on to `name`'s rows."""
        self.tables += 1
        self.current = name
        if self._live:
            self._render()
        else:
            self.console.line(f"  backup: table {self.tables} {name} ({self.summary()})")

    def summary(self) -> str:
        written = self.written()
        elapsed = time.monotonic() - self.started
        rate = written / elapsed if elapsed > 0 else 0.0
        return f"{_human(written)} written, {_human(rate)}/s, {elapsed:.0f} s"

    def written(self) -> int:
        try:
            return self.target.stat().st_size
        except OSError:
            return 0

    def _render(self) -> None:
        table = f" ({self.current})" if self.current else ""
        self.console.status(
            f"  backing up: {plural(self.tables, 'table')} done{table}, {self.summary()}"
        )


# One line of a dump tool's --verbose output per table whose rows it starts on.
_PG_TABLE = re.compile(r'dumping contents of table "(?P<name>[^"]+)"')
_MYSQL_STRUCTURE = re.compile(r"Retrieving table structure for table (?P<name>.+?)\.\.\.$")
_MYSQL_ROWS = "-- Retrieving rows"


def _run_verbose(
    command: list[str],
    env: dict[str, str],
    progress: BackupProgress,
    on_line: Callable[[str, BackupProgress], None],
) -> None:
    """Run a dump tool with --verbose, turning its per-table lines into progress; the rest of
    its stderr is kept for the error message."""
    process = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        preexec_fn=_die_with_task(),
    )
    assert process.stderr is not None
    kept: list[str] = []
    try:
        for line in process.stderr:
            on_line(line.rstrip("\n"), progress)
            kept.append(line)
    except BaseException:  # Ctrl-C, SIGTERM: the dump must not outlive the task's decision
        process.kill()
        raise
    finally:
        process.stderr.close()
        code = process.wait()
    if code != 0:
        raise _tool_error(command[0], "".join(kept))


def _pg_line(line: str, progress: BackupProgress) -> None:
    match = _PG_TABLE.search(line)
    if match:
        progress.table(match.group("name"))


def _mysql_line_reader() -> Callable[[str, BackupProgress], None]:
    table = {"name": ""}

    def on_line(line: str, progress: BackupProgress) -> None:
        match = _MYSQL_STRUCTURE.search(line)
        if match:
            table["name"] = match.group("name")
        elif line.startswith(_MYSQL_ROWS) and table["name"]:
            progress.table(table["name"])

    return on_line


def _human(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _run(command: list[str], env: dict[str, str]) -> None:
    # subprocess.run kills the child when the wait is interrupted (Ctrl-C, SIGTERM).
    completed = subprocess.run(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        preexec_fn=_die_with_task(),
    )
    if completed.returncode != 0:
        raise _tool_error(command[0], completed.stderr)


def _feed(
    command: list[str],
    env: dict[str, str],
    parts: Iterable[bytes | Callable[[IO[bytes]], bool]],
) -> None:
    """Run `command` with stdin made of `parts`: bytes, or writers that stream into stdin and
    return False to abandon (the client then sees end of input without the final part)."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            preexec_fn=_die_with_task(),
        )
        assert process.stdin is not None
        try:
            try:
                for part in parts:
                    if callable(part):
                        if not part(process.stdin):
                            break
                    else:
                        process.stdin.write(part)
            except BrokenPipeError:
                pass  # the client stopped on an error; its stderr says which
            finally:
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.close()
            code = process.wait()
        except BaseException:  # interrupted: the client must not finish (commit) without us
            process.kill()
            process.wait()
            raise
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    if code != 0:
        raise _tool_error(command[0], stderr)


# --- SQLite -------------------------------------------------------------------------------------


def _sqlite_path(environment: Environment) -> Path:
    database = environment.url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        raise UsageError(f"the {environment.name} SQLite database is not a file; nothing to copy")
    return Path(database)


def _backup_sqlite(session: Session, target: Path) -> None:
    import sqlite3

    source = _sqlite_path(session.environment)
    if not source.exists():
        raise BackupError(f"database file {source} does not exist; nothing to back up")
    try:
        copy_sqlite(source, target, timeout=session.settings.connect_timeout)
    except sqlite3.Error as error:
        raise BackupError(f"cannot back up {source}: {error}") from None


def _validate_sqlite(_session: Session, path: Path) -> None:
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


def _restore_sqlite(session: Session, path: Path) -> None:
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


# --- PostgreSQL ---------------------------------------------------------------------------------

# URL query parameters libpq also reads from the environment.
_PG_QUERY_VARIABLES = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "host": "PGHOST",
    "port": "PGPORT",
    # Credentials libpq also accepts as URL parameters; the URL's own userinfo still wins.
    "user": "PGUSER",
    "password": "PGPASSWORD",
}
_PG_IDENTITY = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE")


def pg_environment(url: URL, connect_timeout: float) -> dict[str, str]:
    """The process environment for libpq tools pointed at `url`: the password goes in
    PGPASSWORD, never on a command line where `ps` would show it."""
    env = {key: value for key, value in os.environ.items() if key not in _PG_IDENTITY}
    for key, value in url.query.items():
        variable = _PG_QUERY_VARIABLES.get(key)
        if variable:
            env[variable] = value if isinstance(value, str) else value[0]
    if url.host:
        env["PGHOST"] = url.host
    if url.port:
        env["PGPORT"] = str(url.port)
    if url.username:
        env["PGUSER"] = url.username
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    env["PGDATABASE"] = url.database or "postgres"
    env["PGCONNECT_TIMEOUT"] = str(max(2, round(connect_timeout)))
    env.setdefault("PGAPPNAME", "migration-tasks")
    return env


def _pg_env(session: Session) -> dict[str, str]:
    return pg_environment(session.environment.url, session.settings.connect_timeout)


def _backup_postgresql(session: Session, target: Path) -> None:
    tool = _tool("pg_dump")
    wait = f"--lock-wait-timeout={_dump_lock_wait(session)}"
    command = [tool, "--format=custom", "--no-password", "--verbose", wait, f"--file={target}"]
    with BackupProgress(session.console, target) as progress:
        _run_verbose(command, _pg_env(session), progress, _pg_line)


# pg_dump's wait for its table locks when the environment sets no postgres_lock_timeout.
DUMP_LOCK_WAIT = "60s"


def _dump_lock_wait(session: Session) -> str:
    """How long pg_dump may queue for a table lock: the environment's postgres_lock_timeout.

    pg_dump takes ACCESS SHARE on every table first; behind an ACCESS EXCLUSIVE (a long ALTER,
    another migration) it used to wait without limit, while this task held the migration lock.
    """
    configured = session.environment.postgres_lock_timeout
    return str(configured or DUMP_LOCK_WAIT).strip()


def _validate_postgresql(session: Session, path: Path) -> None:
    tool = _tool("pg_restore")
    _tool("psql")
    completed = subprocess.run(
        [tool, "--list", str(path)],
        env=_pg_env(session),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=_die_with_task(),
    )
    if completed.returncode != 0:
        first = next((line for line in completed.stderr.splitlines() if line.strip()), "")
        raise UsageError(f"{path} is not a readable pg_dump archive: {redact(first)}")


def _restore_postgresql(session: Session, path: Path) -> None:
    """pg_restore's SQL into psql, inside BEGIN ... COMMIT that only commits a complete read."""
    pg_restore, psql = _tool("pg_restore"), _tool("psql")
    env = _pg_env(session)
    prelude = _pg_prelude(session)
    command = [psql, "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--file=-"]
    with tempfile.TemporaryFile() as restore_errors:
        reader = subprocess.Popen(
            [pg_restore, "--clean", "--if-exists", "--no-owner", "--file=-", str(path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=restore_errors,
            preexec_fn=_die_with_task(),
        )

        def stream(stdin: IO[bytes]) -> bool:
            assert reader.stdout is not None
            try:
                shutil.copyfileobj(reader.stdout, stdin, CHUNK)
            finally:
                reader.stdout.close()
            return reader.wait() == 0

        try:
            _feed(command, env, [prelude, stream, b"COMMIT;\n"])
        except BackupError as error:
            raise DatabaseError(f"{error}; rolled back, nothing was changed") from None
        finally:
            if reader.poll() is None:
                reader.kill()
            reader.wait()
        restore_errors.seek(0)
        errors = restore_errors.read().decode("utf-8", "replace")
    if reader.returncode != 0:
        raise DatabaseError(
            f"{_tool_error(pg_restore, errors)}; the transaction was not committed, "
            "nothing was changed"
        )


def _pg_prelude(session: Session) -> bytes:
    """Open the transaction and remove what the backup might not have: other schemas whole,
    and the contents of `public` (the schema itself keeps its owner and privileges)."""
    from sqlalchemy import text

    with session.connect() as connection:
        schemas = connection.execute(
            text(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                "AND nspname NOT IN ('information_schema', 'public') "
                "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = pg_namespace.oid "
                "AND d.deptype = 'e') ORDER BY nspname"
            )
        ).scalars()
        quote = connection.dialect.identifier_preparer.quote_schema
        drops = "".join(f"DROP SCHEMA IF EXISTS {quote(name)} CASCADE;\n" for name in schemas)
    return (
        "BEGIN;\nSET LOCAL client_min_messages = warning;\n" + drops + _PG_CLEAR_PUBLIC
    ).encode()


_PG_CLEAR_PUBLIC = r"""
DO $clear$
DECLARE item record;
BEGIN
  FOR item IN
    SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                          WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                          ELSE 'TABLE' END AS kind,
           format('%I.%I', n.nspname, c.relname) AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
    ORDER BY c.relkind DESC
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE', item.kind, item.name);
  END LOOP;
  FOR item IN
    SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END AS kind,
           format('%I.%I', n.nspname, t.typname) AS name
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'm', 'c')
      AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE', item.kind, item.name);
  END LOOP;
  FOR item IN
    SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
                          ELSE 'FUNCTION' END AS kind,
           p.oid::regprocedure::text AS name
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'public'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE', item.kind, item.name);
  END LOOP;
END
$clear$;
"""


# --- MySQL / MariaDB ----------------------------------------------------------------------------


def mysql_connection(url: URL) -> dict[str, str]:
    """Where and as whom the migration connection logs in, as the driver reads `url`.

    PyMySQL takes every query parameter as a connect argument, over the URL's own parts:
    `?password=`, `?user=`, `?host=`, `?port=`, `?unix_socket=`, `?database=`. The dump and
    restore tools must reach the same database as the same user, so they read the driver's own
    arguments (SQLAlchemy's `create_connect_args`) rather than the URL's fields.
    """
    _args, given = url.get_dialect()().create_connect_args(url)
    values = {
        "host": given.get("host"),
        "port": given.get("port"),
        "user": given.get("user"),
        "password": given.get("password") or given.get("passwd"),
        "database": given.get("database") or given.get("db") or url.database,
        "unix_socket": given.get("unix_socket"),
    }
    return {key: str(value) for key, value in values.items() if value not in (None, "")}


def mysql_arguments(url: URL) -> list[str]:
    """Connection options for the MySQL/MariaDB client tools (no password: MYSQL_PWD has it)."""
    connection = mysql_connection(url)
    arguments = []
    if "unix_socket" in connection:
        arguments += ["--protocol=SOCKET", f"--socket={connection['unix_socket']}"]
    elif "host" in connection:
        arguments += ["--protocol=TCP", f"--host={connection['host']}"]
    if "port" in connection:
        arguments.append(f"--port={connection['port']}")
    if "user" in connection:
        arguments.append(f"--user={connection['user']}")
    return arguments


def _mysql_env(session: Session) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MYSQL_PWD", None)
    password = mysql_connection(session.environment.url).get("password")
    if password:
        env["MYSQL_PWD"] = password
    return env


def _mysql_database(session: Session) -> str:
    return mysql_connection(session.environment.url).get("database", "")


def _backup_mysql(session: Session, target: Path) -> None:
    tool = _tool("mariadb-dump", "mysqldump")
    url = session.environment.url
    command = [
        tool,
        *mysql_arguments(url),
        "--single-transaction",
        "--routines",
        "--triggers",
        "--hex-blob",
        "--no-tablespaces",
        "--default-character-set=utf8mb4",
        "--verbose",
        f"--result-file={target}",
        _mysql_database(session),
    ]
    with BackupProgress(session.console, target) as progress:
        _run_verbose(command, _mysql_env(session), progress, _mysql_line_reader())


def _validate_mysql(_session: Session, path: Path) -> None:
    """A dump that does not end with mysqldump's completion line was cut short."""
    with path.open("rb") as stream:
        stream.seek(max(0, path.stat().st_size - 4096))
        tail = stream.read()
    if MYSQL_COMPLETE not in tail:
        raise UsageError(f"{path} is incomplete (no '-- Dump completed' line at its end)")
    _tool("mariadb", "mysql")


def _restore_mysql(session: Session, path: Path) -> None:
    client = _tool("mariadb", "mysql")
    url = session.environment.url
    prelude = _mysql_prelude(session)
    session.console.warning(
        "MySQL/MariaDB cannot roll back DDL: if the restore fails part way, restore again"
    )

    def stream(stdin: IO[bytes]) -> bool:
        with path.open("rb") as dump:
            shutil.copyfileobj(dump, stdin, CHUNK)
        return True

    _feed(
        [
            client,
            *mysql_arguments(url),
            "--default-character-set=utf8mb4",
            _mysql_database(session),
        ],
        _mysql_env(session),
        [prelude, stream, b"\nSET FOREIGN_KEY_CHECKS=1;\n"],
    )


def _mysql_prelude(session: Session) -> bytes:
    """Drop every view and table first: the backup's tables come back, later ones do not."""
    from sqlalchemy import inspect

    with session.connect() as connection:
        inspector = inspect(connection)
        quote = connection.dialect.identifier_preparer.quote
        views = [f"DROP VIEW IF EXISTS {quote(v)};\n" for v in inspector.get_view_names()]
        tables = [f"DROP TABLE IF EXISTS {quote(t)};\n" for t in inspector.get_table_names()]
    return ("SET FOREIGN_KEY_CHECKS=0;\n" + "".join(views + tables)).encode()


_DUMPERS: dict[str, Callable[[Session, Path], None]] = {
    "sqlite": _backup_sqlite,
    "postgresql": _backup_postgresql,
    "mysql": _backup_mysql,
    "mariadb": _backup_mysql,
}
_VALIDATORS: dict[str, Callable[[Session, Path], None]] = {
    "sqlite": _validate_sqlite,
    "postgresql": _validate_postgresql,
    "mysql": _validate_mysql,
    "mariadb": _validate_mysql,
}
_RESTORERS: dict[str, Callable[[Session, Path], None]] = {
    "sqlite": _restore_sqlite,
    "postgresql": _restore_postgresql,
    "mysql": _restore_mysql,
    "mariadb": _restore_mysql,
}
