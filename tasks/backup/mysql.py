"""MySQL and MariaDB backups: `mariadb-dump` (or `mysqldump`) in one consistent transaction,
restored with the `mariadb` (or `mysql`) client after dropping the current tables. DDL cannot be
rolled back there, so a dump is checked to be complete before anything is dropped. The password
travels in MYSQL_PWD, never on a command line.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tasks.backup.tools import CHUNK, BackupProgress, feed, find_tool, run_verbose
from tasks.core.errors import UsageError
from tasks.core.session import Session

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


MYSQL_COMPLETE = b"-- Dump completed"


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


def _tool_environment(session: Session) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MYSQL_PWD", None)
    password = mysql_connection(session.environment.url).get("password")
    if password:
        env["MYSQL_PWD"] = password
    return env


def _mysql_database(session: Session) -> str:
    return mysql_connection(session.environment.url).get("database", "")


def backup(session: Session, target: Path) -> None:
    tool = find_tool("mariadb-dump", "mysqldump")
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
        run_verbose(command, _tool_environment(session), progress, _mysql_line_reader())


_MYSQL_STRUCTURE = re.compile(r"Retrieving table structure for table (?P<name>.+?)\.\.\.$")
_MYSQL_ROWS = "-- Retrieving rows"


def _mysql_line_reader() -> Callable[[str, BackupProgress], None]:
    table = {"name": ""}

    def on_line(line: str, progress: BackupProgress) -> None:
        match = _MYSQL_STRUCTURE.search(line)
        if match:
            table["name"] = match.group("name")
        elif line.startswith(_MYSQL_ROWS) and table["name"]:
            progress.table(table["name"])

    return on_line


def validate(_session: Session, path: Path) -> None:
    """A dump that does not end with mysqldump's completion line was cut short."""
    with path.open("rb") as stream:
        stream.seek(max(0, path.stat().st_size - 4096))
        tail = stream.read()
    if MYSQL_COMPLETE not in tail:
        raise UsageError(f"{path} is incomplete (no '-- Dump completed' line at its end)")
    find_tool("mariadb", "mysql")


def restore(session: Session, path: Path) -> None:
    client = find_tool("mariadb", "mysql")
    url = session.environment.url
    prelude = _mysql_prelude(session)
    session.console.warning(
        "MySQL/MariaDB cannot roll back DDL: if the restore fails part way, restore again"
    )

    def stream(stdin: IO[bytes]) -> bool:
        with path.open("rb") as dump:
            shutil.copyfileobj(dump, stdin, CHUNK)
        return True

    feed(
        [
            client,
            *mysql_arguments(url),
            "--default-character-set=utf8mb4",
            _mysql_database(session),
        ],
        _tool_environment(session),
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
