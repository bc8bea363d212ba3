"""PostgreSQL backups: `pg_dump --format=custom`, restored by `pg_restore` piped into `psql`
inside one transaction that first removes what the backup does not have and commits only when
pg_restore read the whole archive. The password travels in PGPASSWORD, never on a command line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tasks.backup.tools import (
    CHUNK,
    BackupError,
    BackupProgress,
    die_with_task,
    feed,
    find_tool,
    run_verbose,
    tool_error,
)
from tasks.core.errors import DatabaseError, UsageError
from tasks.core.redaction import redact
from tasks.core.session import Session

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


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


def _tool_environment(session: Session) -> dict[str, str]:
    return pg_environment(session.environment.url, session.settings.connect_timeout)


def backup(session: Session, target: Path) -> None:
    tool = find_tool("pg_dump")
    wait = f"--lock-wait-timeout={_dump_lock_wait(session)}"
    command = [tool, "--format=custom", "--no-password", "--verbose", wait, f"--file={target}"]
    with BackupProgress(session.console, target) as progress:
        run_verbose(command, _tool_environment(session), progress, _pg_line)


# pg_dump's wait for its table locks when the environment sets no postgres_lock_timeout.
DUMP_LOCK_WAIT = "60s"


def _dump_lock_wait(session: Session) -> str:
    """How long pg_dump may queue for a table lock: the environment's postgres_lock_timeout.

    pg_dump takes ACCESS SHARE on every table first; behind an ACCESS EXCLUSIVE (a long ALTER,
    another migration) it used to wait without limit, while this task held the migration lock.
    """
    configured = session.environment.postgres_lock_timeout
    return str(configured or DUMP_LOCK_WAIT).strip()


# One line of a dump tool's --verbose output per table whose rows it starts on.
_PG_TABLE = re.compile(r'dumping contents of table "(?P<name>[^"]+)"')


def _pg_line(line: str, progress: BackupProgress) -> None:
    match = _PG_TABLE.search(line)
    if match:
        progress.table(match.group("name"))


def validate(session: Session, path: Path) -> None:
    tool = find_tool("pg_restore")
    find_tool("psql")
    completed = subprocess.run(
        [tool, "--list", str(path)],
        env=_tool_environment(session),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=die_with_task(),
    )
    if completed.returncode != 0:
        first = next((line for line in completed.stderr.splitlines() if line.strip()), "")
        raise UsageError(f"{path} is not a readable pg_dump archive: {redact(first)}")


def restore(session: Session, path: Path) -> None:
    """pg_restore's SQL into psql, inside BEGIN ... COMMIT that only commits a complete read."""
    pg_restore, psql = find_tool("pg_restore"), find_tool("psql")
    env = _tool_environment(session)
    prelude = _pg_prelude(session)
    command = [psql, "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--file=-"]
    with tempfile.TemporaryFile() as restore_errors:
        reader = subprocess.Popen(
            [pg_restore, "--clean", "--if-exists", "--no-owner", "--file=-", str(path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=restore_errors,
            preexec_fn=die_with_task(),
        )

        def stream(stdin: IO[bytes]) -> bool:
            assert reader.stdout is not None
            try:
                shutil.copyfileobj(reader.stdout, stdin, CHUNK)
            finally:
                reader.stdout.close()
            return reader.wait() == 0

        try:
            feed(command, env, [prelude, stream, b"COMMIT;\n"])
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
            f"{tool_error(pg_restore, errors)}; the transaction was not committed, "
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
