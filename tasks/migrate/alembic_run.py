"""Running one Alembic command for a session: its Config and env.py handover, its printed
output routed through the console, and its errors turned into one masked line.

Also the reads every command starts with: the database's revision(s) (recorded as the run's
`revision_before`) and PostgreSQL's server version (squawk's rules depend on it).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.alembic_config import alembic_config, without_ini_logging
from tasks.core.async_driver import in_worker_thread
from tasks.core.engines import describe_database_error
from tasks.core.errors import DatabaseError, MigrationsError, Refused, UsageError
from tasks.core.handover import EnvHandover
from tasks.core.redaction import redact
from tasks.core.session import Session
from tasks.migrate.scripts import display_path, first_line

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection


def session_config(session: Session, connection: Connection | None) -> Config:
    return alembic_config(
        session.settings, handover_for(session, connection), stdout=ConsoleStream(session)
    )


def handover_for(session: Session, connection: Connection | None) -> EnvHandover:
    return EnvHandover(
        environment=session.environment,
        metadata_path=session.settings.metadata,
        connection=connection,
        metadata=session.metadata(),
        connect_timeout=session.settings.connect_timeout,
    )


class ConsoleStream(io.TextIOBase):
    """Alembic's printed output, routed through the console (and its masking)."""

    def __init__(self, session: Session) -> None:
        self._console = session.console
        self._buffer = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """Alembic encodes what it prints to this stream's encoding, "ascii" when there is
        none: every é of a revision message came out as `?`."""
        return "utf-8"

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._console.line(line)
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._console.line(self._buffer)
            self._buffer = ""


def database_heads(connection: Connection, session: Session) -> tuple[str, ...]:
    """The database's revision(s); the first read of a run is recorded as `revision_before`,
    which is why read-only tasks call it even when they do not use the answer."""
    from alembic.migration import MigrationContext

    try:
        schema = session.environment.schema
        options = {"version_table_schema": schema} if schema else {}
        heads = MigrationContext.configure(connection, opts=options).get_current_heads()
    except Exception as error:
        raise as_database_error(session, error) from None
    connection.rollback()  # end the read so Alembic starts each revision in its own transaction
    if session.record.revision_before is None:
        session.record.revision_before = list(heads)
    return tuple(heads)


def server_version(session: Session, connection: Connection) -> tuple[int | str, ...] | None:
    """PostgreSQL's version, so squawk applies the rules of the server the plan is for."""
    if session.environment.dialect != "postgresql":
        return None
    return connection.dialect.server_version_info


def run_alembic(session: Session, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an Alembic command; its errors become our typed, masked one-liners."""
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        with without_ini_logging():
            if not _on_kept_async_driver(session):
                return operation(*args, **kwargs)
            # An async application's env.py may run only in a worker thread of its event loop.
            return in_worker_thread(lambda: operation(*args, **kwargs))
    except (CommandError, RevisionError) as error:
        raise UsageError(redact(first_line(error))) from None
    except Refused:
        raise
    except AssertionError as error:
        if _from_revision_map(error):  # a relative step past the graph (--sql: head+1, @)
            raise UsageError("no such revision (a relative step past base or head?)") from None
        raise as_database_error(session, error) from None
    except Exception as error:
        converted = as_database_error(session, error)
        converted.in_env_py = _raised_in_env_py(error)  # type: ignore[attr-defined]
        raise converted from None


# What the tasks give env.py, for the one line that says an env.py could not be driven.
ENV_PY_HINT = (
    " (the tasks hand env.py the connection in config.attributes['connection'] "
    "and the URL in sqlalchemy.url)"
)


def _raised_in_env_py(error: BaseException) -> bool:
    """Whether `error` came from env.py itself rather than from a revision it ran.

    A revision module (it defines `down_revision`) is on the traceback when a revision fails,
    wherever its file lives (site-packages for an installed application's history); when env.py
    is and no revision is, the revision never ran and blaming it would send people to the wrong
    file.
    """
    from pathlib import PurePath

    in_env_py = False
    traceback_ = error.__traceback__
    while traceback_ is not None:
        frame = traceback_.tb_frame
        if "down_revision" in frame.f_globals and "revision" in frame.f_globals:
            return False
        in_env_py = in_env_py or PurePath(frame.f_code.co_filename).name == "env.py"
        traceback_ = traceback_.tb_next
    return in_env_py


def env_py_path(session: Session) -> str:
    """env.py's path as people find it: relative to the project when inside it."""
    from alembic.script import ScriptDirectory

    try:
        script = ScriptDirectory.from_config(alembic_config(session.settings))
    except Exception:
        return "env.py"
    return display_path(session, Path(script.env_py_location))


def _from_revision_map(error: BaseException) -> bool:
    """Whether Alembic's RevisionMap raised `error` (it asserts instead of raising an error)."""
    import traceback
    from pathlib import PurePath

    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and PurePath(frames[-1].filename).parts[-3:] == (
        "alembic",
        "script",
        "revision.py",
    )


def as_database_error(session: Session, error: Exception) -> Exception:
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(error, MigrationsError):
        return error
    if isinstance(error, SQLAlchemyError):
        return DatabaseError(f"{session.environment.name}: {describe_database_error(error)}")
    return DatabaseError(
        f"{session.environment.name}: {type(error).__name__}: {redact(str(error))}"
    )


def _on_kept_async_driver(session: Session) -> bool:
    """Whether env.py migrates on the URL's own async driver (`migrations.driver: keep`); a
    command that needs no database (merge, an offline revision) has no URL to ask about."""
    return session.names_a_database and session.environment.migration_url is not None
