"""The shared task context: everything a core operation needs, independent of Invoke.

A `Session` is one task run against one environment: settings, the resolved database, the
confirmation hook, the console and the run record that ends up in the log. Core functions
(`tasks.migrations`, `tasks.sync`, ...) take a Session, so they run the same from Invoke, tests
or any other caller.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from tasks.confirmation import Confirmer
from tasks.environments import Environment, resolve_environment
from tasks.redaction import redact
from tasks.run_log import RunRecord
from tasks.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Connection


@dataclass
class Console:
    """Readable lines for people: results to stdout, warnings to stderr, secrets masked.

    On a terminal a `Progress` may keep one live status line at the bottom; every other line
    is printed above it, so nothing is overwritten. Without a terminal (CI, pipes) there is
    never a live line: output stays plain, one line per event.
    """

    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    _status: str = ""
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def line(self, text: str = "") -> None:
        with self._lock:
            self._clear_status()
            print(redact(text), file=self.stdout, flush=True)
            self._draw_status()

    def warning(self, text: str) -> None:
        with self._lock:
            self._clear_status()
            print(f"WARNING: {redact(text)}", file=self.stderr, flush=True)
            self._draw_status()

    def is_terminal(self) -> bool:
        try:
            return bool(self.stdout.isatty())
        except (AttributeError, ValueError):
            return False

    def status(self, text: str) -> None:
        """Replace the live status line (terminals only; ignored elsewhere)."""
        if not self.is_terminal():
            return
        with self._lock:
            self._clear_status()
            self._status = redact(text)
            self._draw_status()

    def _clear_status(self) -> None:
        """Wipe the live line from the screen; it is kept, to be drawn again below."""
        if self._status:
            self.stdout.write("\r\x1b[K")
            self.stdout.flush()

    def _draw_status(self) -> None:
        if self._status:
            self.stdout.write(self._status)
            self.stdout.flush()

    def clear_status(self) -> None:
        with self._lock:
            if self._status:
                self.stdout.write("\r\x1b[K")
                self.stdout.flush()
                self._status = ""


class Progress:
    """Progress through a known number of steps (revisions, backup chunks).

    On a terminal: a live line `[3/40] applying <what> 12s` that ticks every second while a
    step runs, then one permanent line per finished step. Elsewhere: only the permanent lines,
    so CI logs stay quiet and line-oriented. Use as a context manager.
    """

    def __init__(self, console: Console, total: int, verb: str = "applying") -> None:
        self.console = console
        self.total = total
        self.verb = verb
        self.done = 0
        self._current = ""
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self.console.is_terminal():
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(2)
        self.console.clear_status()

    def start(self, what: str) -> None:
        """A step begins: the live line names it."""
        self._current = what
        self._started = time.monotonic()
        self._render()

    def finish(self, text: str) -> float:
        """The step ended: one permanent line `[n/total] text (1.2 s)`; returns its seconds."""
        self.done += 1
        seconds = time.monotonic() - self._started
        counter = f"[{self.done}/{self.total}] " if self.total else ""
        self.console.clear_status()  # the permanent line takes the live line's place
        self.console.line(f"  {counter}{text} ({seconds:.1f} s)")
        self._current = ""
        self._started = time.monotonic()
        return seconds

    def _render(self) -> None:
        if self._current:
            elapsed = int(time.monotonic() - self._started)
            step = min(self.done + 1, self.total) if self.total else self.done + 1
            counter = f"[{step}/{self.total}] " if self.total else ""
            self.console.status(f"  {counter}{self.verb} {self._current} {elapsed}s")

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._render()


@dataclass
class Session:
    settings: Settings
    record: RunRecord
    confirmer: Confirmer = field(default_factory=Confirmer)
    console: Console = field(default_factory=Console)
    _environment: Environment | None = None
    _metadata: MetaData | None = None

    @property
    def environment(self) -> Environment:
        """The run's database, resolved on first use: `heads` never needs a URL."""
        if self._environment is None:
            self._environment = resolve_environment(self.settings, self.record.environment)
            self.record.database = self._environment.masked_url
        return self._environment

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        from tasks.engines import connect

        environment = self.environment
        with connect(environment, self.settings.connect_timeout) as connection:
            _apply_session_timeouts(connection, self.settings, environment)
            yield connection

    def metadata(self) -> MetaData:
        """The configured models, imported once per run."""
        if self._metadata is None:
            from tasks.models import load_metadata

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


def _apply_session_timeouts(
    connection: Connection, settings: Settings, environment: Environment
) -> None:
    """PostgreSQL migrations fail fast on a busy table instead of queueing traffic behind them."""
    if environment.dialect != "postgresql":
        return
    configured = settings.environment(environment.name)
    values = {
        "lock_timeout": configured.postgres_lock_timeout,
        "statement_timeout": configured.postgres_statement_timeout,
    }
    from tasks.engines import describe_database_error
    from tasks.errors import ConfigError

    for name, value in values.items():
        if not value:
            continue
        try:
            connection.exec_driver_sql(
                "SELECT set_config(%(name)s, %(value)s, false)", {"name": name, "value": value}
            )
        except Exception as error:
            connection.rollback()
            raise ConfigError(
                f"postgres_{name} {value!r} for {environment.name} is not valid: "
                f"{describe_database_error(error)}"
            ) from None
    connection.commit()
    _detect_dead_client(connection)


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
        connection.exec_driver_sql(
            "SELECT set_config('client_connection_check_interval', %(value)s, false)",
            {"value": CLIENT_CHECK_INTERVAL},
        )
    except Exception:
        connection.rollback()
        return
    connection.commit()
