"""One run against one database: everything a core operation needs, independent of Invoke.

A `Session` is one task run against one environment: settings, the resolved database, the
confirmation hook, the console and the run record that ends up in the log. Core functions
(`tasks.migrate.commands`, `tasks.schema.sync`, ...) take a Session, so they run the same from
Invoke, tests
or any other caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.confirmation import Confirmer
from tasks.core.console import Console
from tasks.core.environments import Environment, resolve_environment
from tasks.core.run_log import RunRecord
from tasks.core.settings import Settings

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Connection


@dataclass
class Session:
    settings: Settings
    record: RunRecord
    confirmer: Confirmer = field(default_factory=Confirmer)
    console: Console = field(default_factory=Console)
    _environment: Environment | None = None
    _metadata: MetaData | None = None
    # Alembic's ScriptDirectory, read once per run (or once per fleet, handed to each target).
    _script: ScriptDirectory | None = None
    # A backup the caller took already: a schema fleet dumps its shared database once, before
    # any schema changes, instead of once per schema.
    backup_taken: Path | None = None
    # Tasks that ask before they change (upgrade, downgrade, stamp) get the migration lock from
    # the runner as this callable instead of holding it from the start (issue 18.7): an operator
    # who walks away from a prompt must not block every other deployer.
    lock_taker: Callable[[], object] | None = None
    lock_held: bool = False

    @property
    def environment(self) -> Environment:
        """The run's database, resolved on first use: `heads` never needs a URL."""
        if self._environment is None:
            self._environment = resolve_environment(self.settings, self.record.environment)
            self.record.database = self._environment.masked_url
        return self._environment

    @property
    def names_a_database(self) -> bool:
        """Whether the run has a database: given (a fleet's target), resolved, or configured."""
        from tasks.core.environments import url_is_set

        if self._environment is not None:
            return True
        return url_is_set(self.settings, self.record.environment)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        from tasks.core.engines import connect

        environment = self.environment
        with connect(environment, self.settings.connect_timeout) as connection:
            apply_session_timeouts(connection, self.settings, environment)
            if environment.schema:
                enter_schema(connection, environment.schema)
            yield connection

    def hold_lock(self) -> None:
        """Take the migration lock the runner left to this run (once; a no-op when the runner
        holds it already or the run has none)."""
        if self.lock_taker is not None and not self.lock_held:
            self.lock_taker()
            self.lock_held = True

    def metadata(self) -> MetaData:
        """The configured models, imported once per run."""
        if self._metadata is None:
            from tasks.core.metadata import load_metadata

            self._metadata = load_metadata(self.settings.metadata)
        return self._metadata

    def can_prompt(self) -> bool:
        """Whether a human can answer a prompt (stdin is a terminal); --yes aside."""
        try:
            return bool(self.confirmer.stdin.isatty())
        except (AttributeError, ValueError):
            return False

    def confirm(self, action: str, *, protected_word: bool = False) -> None:
        """Ask before `action`; on a protected environment the operator types its name."""
        word = self.environment.name if (protected_word or self.environment.protected) else None
        self.confirmer.ask(action, type_to_confirm=word)

    def __post_init__(self) -> None:
        """Prompts wait `migrations.prompt_timeout` seconds for an answer (0: no limit)."""
        if self.confirmer.timeout is None:
            raw = self.settings.extra.get("prompt_timeout") or 0
            try:
                seconds = float(raw)
            except (TypeError, ValueError):
                seconds = -1.0
            if not 0 <= seconds < float("inf"):
                from tasks.core.errors import ConfigError

                raise ConfigError(f"migrations.prompt_timeout takes seconds, not {raw!r}")
            self.confirmer.timeout = seconds or None


def apply_session_timeouts(
    connection: Connection, settings: Settings, environment: Environment
) -> None:
    """PostgreSQL migrations fail fast on a busy table instead of queueing traffic behind them."""
    if environment.dialect != "postgresql":
        return
    values = {
        "lock_timeout": environment.postgres_lock_timeout,
        "statement_timeout": environment.postgres_statement_timeout,
    }
    from sqlalchemy import text

    from tasks.core.engines import describe_database_error
    from tasks.core.errors import ConfigError

    for name, value in values.items():
        if not value:
            continue
        try:
            # Bound through SQLAlchemy: the driver's own parameter style (psycopg2's
            # `%(name)s`, asyncpg's `$1`) is the dialect's business.
            connection.execute(
                text("SELECT set_config(:name, :value, false)"), {"name": name, "value": value}
            )
        except Exception as error:
            connection.rollback()
            raise ConfigError(
                f"postgres_{name} {value!r} for {environment.name} is not valid: "
                f"{describe_database_error(error)}"
            ) from None
    connection.commit()
    _detect_dead_client(connection)


def enter_schema(connection: Connection, schema: str) -> None:
    """Schema-per-tenant (Alembic's cookbook): unqualified names resolve in the tenant's schema
    only, and SQLAlchemy treats it as the default schema. The engine is this connection's own,
    so changing its dialect touches no other target."""
    quoted = connection.dialect.identifier_preparer.quote_identifier(schema)
    connection.exec_driver_sql(f"SET search_path TO {quoted}")
    connection.commit()
    connection.dialect.default_schema_name = schema


# Seconds between the server's checks that a migration's client is still there (PostgreSQL 14+).
CLIENT_CHECK_INTERVAL = "1s"


def _detect_dead_client(connection: Connection) -> None:
    """Make the server abort a statement whose client died (SIGKILL, lost VM) within a second.

    Without this, a runner killed in the middle of a long statement leaves its server session
    running until the statement ends on its own, still holding the revision's locks and
    uncommitted DDL: the lock is free, but the next run blocks on those locks and fails on its
    lock_timeout. Off by default in PostgreSQL, settable by any user, absent before 14 and on
    platforms without the kernel support (then we do without it).
    """
    version = connection.dialect.server_version_info or (0,)
    if version < (14,):
        return
    try:
        from sqlalchemy import text

        connection.execute(
            text("SELECT set_config('client_connection_check_interval', :value, false)"),
            {"value": CLIENT_CHECK_INTERVAL},
        )
    except Exception:
        connection.rollback()
        return
    connection.commit()
