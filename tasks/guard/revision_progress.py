"""Failed revisions stay failed: the bookkeeping of revisions whose statements commit on their own.

Flyway's rule for databases without transactional DDL. A revision on MySQL/MariaDB (every DDL
statement commits implicitly) or inside a PostgreSQL `autocommit_block()` cannot be rolled back
when it fails part way: some of its statements are in the database, the version table still
names the revision before it, and running it again from the top applies them twice. So:

- Before a revision sends its first statement that commits on its own, a row in
  `migration_progress` (in the target's schema, beside the version table) records it as
  running, and every such statement is added to the row before it is sent. The row is written
  through the migration lock's own connection: it can only be written while the lock's session
  lives, so a runner that lost its lock cannot start anything that commits.
- Before each such statement the lock is verified (`verify_lock`): a run that lost its lock
  stops before its next statement, and says which statements had committed.
- The row goes away once the revision has committed (the version table then names it). A row
  left behind (an error, a lost lock, `kill -9`) makes every later upgrade and downgrade of that
  database refuse with exit code 8, naming the revision and what it left, until
  `invoke <env>.repair -r REV --applied` or `--reverted` records what a person did (audited).
- A revision declaring `rerunnable = True` (every step idempotent, as lock-safe revisions are)
  is run again instead, once the session that ran it has ended.

A second runner that takes the lock after the first lost it finds the row, and refuses. An
operation that resumes from its own saved position (`op.backfill`) makes a revision that changed
nothing before it re-runnable (`resumable_from_here`).

Why this module is long: the table, the rule for what commits on its own per dialect, the watch
that records statements as they are sent, and the refusal and repair read one row's life cycle;
split apart, each half would need the other's private details.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tasks.core.errors import DifferencesFound, ExitCode, LockLost, MigrationsError, UsageError
from tasks.core.redaction import redact

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

    from tasks.core.environments import Environment
    from tasks.core.session import Session

PROGRESS_TABLE = "migration_progress"

# Statements that never commit anything on MySQL/MariaDB on their own: everything else (DDL,
# LOCK TABLES, SET autocommit, CALL, anything not understood) is treated as committing.
_MYSQL_TRANSACTIONAL = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "SHOW", "DESCRIBE", "DESC", "EXPLAIN"}
    | {"WITH", "VALUES", "TABLE", "DO", "SAVEPOINT", "RELEASE"}
)
# Statements that end a PostgreSQL transaction from inside it.
_POSTGRESQL_COMMITTING = frozenset({"COMMIT", "END"})
# Statements that change nothing a re-run would trip over.
_READS = frozenset({"SELECT", "SHOW", "SET"})
_FIRST_WORD = re.compile(r"\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*\(*\s*([A-Za-z]+)", re.DOTALL)
# What a row keeps of one statement: enough to recognise it, never a whole data load.
STATEMENT_CHARS = 2000


class RevisionNotFinished(MigrationsError):
    """An earlier run of a revision did not finish; upgrades refuse until `repair`."""

    exit_code = ExitCode.REVISION_NOT_FINISHED
    outcome = "refused"


def commits_on_its_own(dialect: str, connection: Connection, statement: str) -> bool:
    """Whether `statement`, sent on `connection`, commits (or is committed) the moment it runs."""
    word = _first_word(statement)
    if dialect in {"mysql", "mariadb"}:
        if word == "SET":  # a session variable; `SET autocommit = 1` commits the transaction
            return "AUTOCOMMIT" in statement.upper()
        return word not in _MYSQL_TRANSACTIONAL
    if dialect == "postgresql":
        return autocommitting(connection) or word in _POSTGRESQL_COMMITTING
    return False


def autocommitting(connection: Connection) -> bool:
    """The connection runs each statement as its own transaction (Alembic's autocommit_block
    sets the isolation level; an env.py may set the driver's flag itself)."""
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return True
    with suppress(Exception):
        return bool(getattr(connection.connection.dbapi_connection, "autocommit", False))
    return False


def _first_word(statement: str) -> str:
    match = _FIRST_WORD.match(statement)
    return match.group(1).upper() if match else ""


_TABLES: dict[str | None, Table] = {}


def progress_table(schema: str | None) -> Table:
    """The bookkeeping table in `schema` (the target's, as the version table's); one MetaData
    per schema so schema-per-tenant targets keep their own rows."""
    if schema not in _TABLES:
        from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text

        _TABLES[schema] = Table(
            PROGRESS_TABLE,
            MetaData(),
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("revision", String(255), nullable=False),
            Column("direction", String(16), nullable=False),
            Column("state", String(16), nullable=False),
            Column("started_at", DateTime(timezone=True), nullable=False),
            Column("task", String(128)),
            Column("operator", String(255)),
            Column("host", String(255)),
            Column("session_id", Integer),
            Column("rerunnable", Integer, nullable=False, default=0),
            Column("statements", Text),
            Column("residue", Text),
            Column("error", Text),
            schema=schema,
        )
    return _TABLES[schema]


@dataclass
class Unfinished:
    """One row: a revision that started committing statements and did not finish."""

    id: int
    revision: str
    direction: str
    state: str
    started_at: Any
    task: str | None
    operator: str | None
    host: str | None
    session_id: int | None
    rerunnable: bool
    statements: list[str]
    residue: dict[str, list[str]]
    error: str | None

    @classmethod
    def from_row(cls, row: Any) -> Unfinished:
        mapping = dict(row._mapping)
        return cls(
            id=mapping["id"],
            revision=mapping["revision"],
            direction=mapping["direction"],
            state=mapping["state"],
            started_at=mapping["started_at"],
            task=mapping["task"],
            operator=mapping["operator"],
            host=mapping["host"],
            session_id=mapping["session_id"],
            rerunnable=bool(mapping["rerunnable"]),
            statements=_loads(mapping["statements"], []),
            residue=_loads(mapping["residue"], {}),
            error=mapping["error"],
        )

    def finished_according_to(self, applied: set[str]) -> bool:
        """The version table says the revision's own transaction committed after all."""
        if self.direction == "upgrade":
            return self.revision in applied
        return self.revision not in applied

    def left(self) -> str:
        """What it left, in a few words for the one-line error."""
        phrases = self.residue.get("left_behind") or []
        if phrases:
            return ", ".join(phrases)
        if self.statements:
            count = len(self.statements)
            return f"{count} statement{'s' if count != 1 else ''} that commit on their own"
        return "nothing recorded"


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def read_unfinished(connection: Connection, schema: str | None) -> list[Unfinished]:
    """Every row of the target's bookkeeping; none when the table was never created."""
    from sqlalchemy import inspect, select

    if not inspect(connection).has_table(PROGRESS_TABLE, schema=schema):
        return []
    table = progress_table(schema)
    rows = connection.execute(select(table).order_by(table.c.id))
    return [Unfinished.from_row(row) for row in rows]


def applied_revisions(script: Any, heads: tuple[str, ...]) -> set[str]:
    """Every revision the version table's heads stand on (heads included)."""
    if not heads:
        return set()
    return {
        revision.revision
        for revision in script.iterate_revisions(heads, "base")
        if revision is not None
    }


def require_finished(
    session: Session, connection: Connection, script: Any, heads: tuple[str, ...]
) -> None:
    """Refuse (exit 8) while an earlier run left a revision unfinished, unless that revision is
    re-runnable and nobody runs it any more. Rows the version table proves finished (the runner
    died between its commit and removing the row) are removed on the way."""
    schema = session.environment.schema
    try:
        rows = read_unfinished(connection, schema)
    finally:
        connection.rollback()  # as database_heads: each revision starts its own transaction
    if not rows:
        return
    applied = applied_revisions(script, heads)
    stale: list[int] = []
    for row in rows:
        if row.finished_according_to(applied):
            stale.append(row.id)
        elif row.rerunnable and not _still_running(connection, session, row):
            session.console.line(
                f"{session.environment.name}: revision {row.revision} did not finish last time "
                f"({row.error or row.state}); it declares itself re-runnable: running it again"
            )
            session.record.details.setdefault("rerun", []).append(row.revision)
            stale.append(row.id)
        else:
            _delete(session.environment, connection, schema, stale)
            raise _refusal(session, row, connection)
    _delete(session.environment, connection, schema, stale)


def report_unfinished(
    session: Session, connection: Connection, script: Any, heads: tuple[str, ...], *, check: bool
) -> None:
    """`current`: a revision an earlier run left unfinished. The version table alone would say
    "at head" while the next upgrade refuses (exit 8) or runs the revision again; this says
    which, and with `check` exits as that upgrade would: 8 when it would refuse, 4 when it
    would run it again. Read only: rows the version table proves finished stay for the next
    run to remove."""
    try:
        rows = read_unfinished(connection, session.environment.schema)
    finally:
        connection.rollback()
    applied = applied_revisions(script, heads)
    name = session.environment.name
    for row in (row for row in rows if not row.finished_according_to(applied)):
        again = row.rerunnable and not _still_running(connection, session, row)
        session.record.details.setdefault("unfinished", []).append(
            {"revision": row.revision, "direction": row.direction, "runs_again": again}
        )
        if again:
            session.console.line(
                f"{name}: revision {row.revision} did not finish ({row.direction}); it declares "
                "itself re-runnable: the next upgrade runs it again"
            )
            if check:
                raise DifferencesFound(f"{name}: revision {row.revision} did not finish")
            continue
        refusal = _refusal(session, row, connection)
        if check:
            raise refusal
        session.console.line(f"{name}: {refusal}")


def _still_running(connection: Connection, session: Session, row: Unfinished) -> bool:
    """Whether the server session that ran the revision is still there (a runner that lost its
    lock may still be in its last statement). Unknown counts as running."""
    if row.state == "failed":
        return False  # its runner recorded the failure itself: it has stopped
    if row.session_id is None:
        return True
    dialect = session.environment.dialect
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid = :id"
        if dialect == "postgresql"
        else "SELECT count(*) FROM information_schema.PROCESSLIST WHERE ID = :id"
    )
    from sqlalchemy import text

    try:
        return bool(connection.execute(text(query), {"id": row.session_id}).scalar())
    except Exception:
        return True
    finally:
        connection.rollback()


def _refusal(session: Session, row: Unfinished, connection: Connection) -> RevisionNotFinished:
    collection = session.record.task.rsplit(".", 1)[0]
    who = " ".join(part for part in (row.operator, f"on {row.host}" if row.host else "") if part)
    when = f"{row.started_at:%Y-%m-%d %H:%M:%S}" if hasattr(row.started_at, "strftime") else "?"
    session.record.details["unfinished_revision"] = {
        "revision": row.revision,
        "direction": row.direction,
        "state": row.state,
        "task": row.task,
        "statements": row.statements,
        "residue": row.residue,
        "error": row.error,
    }
    console = session.console
    console.line(f"revision {row.revision} did not finish ({row.direction} by {row.task}):")
    for phrase in row.residue.get("left_behind") or []:
        console.line(f"  left: {phrase}")
    if row.statements:
        console.line("statements it sent that commit on their own (the last may not have run):")
        for statement in row.statements:
            console.line(f"  {' '.join(statement.split())};")
    for statement in row.residue.get("undo") or []:
        console.line(f"  to undo: {statement};")
    why = f": {row.error}" if row.error else " (the run ended without saying why: killed?)"
    return RevisionNotFinished(
        f"revision {row.revision} did not finish ({row.direction} started {when} UTC by "
        f"{who or 'unknown'}, {row.task}{why}); it left {row.left()}; every upgrade and "
        f"downgrade is refused until someone finishes or undoes it by hand and records which: "
        f"{repair_hint(collection, row.revision)}"
    )


def _delete(
    environment: Environment, connection: Connection, schema: str | None, ids: list[int]
) -> None:
    if not ids:
        return
    table = progress_table(schema)
    with connection.begin():
        connection.execute(table.delete().where(table.c.id.in_(ids)))


# --- recording while revisions run ----------------------------------------------------------


_THREAD = threading.local()


@dataclass
class RevisionWatch:
    """Follows the revision in progress on the migration connection: checks the lock before
    every statement that commits on its own and records such statements before they run."""

    session: Session
    connection: Connection
    session_id: int | None = None
    current: str | None = None
    direction: str = "upgrade"
    rerunnable: bool = False
    row_id: int | None = None
    applied: bool = False  # Alembic reported the revision applied: its own commit follows
    stopped: LockLost | None = None  # the lock was found lost: nothing more may run
    sent: list[str] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)
    done: int = 0  # how many of `sent` the server ran (after_cursor_execute)
    finished_rows: list[int] = field(default_factory=list)

    @property
    def dialect(self) -> str:
        return self.session.environment.dialect

    def step_starting(self, revision: str, *, is_upgrade: bool, module: Any = None) -> None:
        """Alembic takes the next step only after the previous one committed: its row (if it
        wrote one) is no longer needed."""
        self._forget_finished()
        self.current = revision
        self.direction = "upgrade" if is_upgrade else "downgrade"
        self.rerunnable = bool(getattr(module, "rerunnable", False) is True)
        self.row_id = None
        self.applied = False
        self.sent = []
        self.committed = []
        self.done = 0

    def mark_resumable(self) -> None:
        """An operation that resumes where it stopped (`op.backfill`) begins: when the revision
        has changed nothing before it (reads only), running the revision again is safe."""
        if self.current is None or self.committed:
            return
        if all(_first_word(sent).upper() in _READS for sent in self.sent):
            self.rerunnable = True

    def revision_applied(self) -> None:
        """Alembic's on_version_apply: the commit that follows is the revision's own."""
        self.applied = True

    def run_finished(self) -> None:
        """Alembic returned: the last revision committed."""
        self._forget_finished()
        self.current = None

    def _forget_finished(self) -> None:
        if self.row_id is not None:
            self.finished_rows.append(self.row_id)
            self.row_id = None
        if not self.finished_rows:
            return
        from tasks.guard.lock import held_lock_connection

        lock_connection = held_lock_connection()
        if lock_connection is None:
            return
        table = progress_table(self.session.environment.schema)
        # A failure here leaves a row the version table proves finished: the next run removes it.
        with suppress(Exception):
            lock_connection.execute(table.delete().where(table.c.id.in_(self.finished_rows)))
            self.finished_rows = []

    def before_statement(self, connection: Connection, statement: str) -> None:
        """SQLAlchemy's before_cursor_execute: verify, then record, then let it run."""
        if self.stopped is not None:
            if commits_on_its_own(self.dialect, connection, statement):
                raise self.stopped
            return  # reading what the revision left, and the version table, on the way out
        try:
            self._before_statement(connection, statement)
        except LockLost as lost:
            self.stopped = lost
            raise

    def _before_statement(self, connection: Connection, statement: str) -> None:
        from tasks.guard.lock import verify_lock

        committing = commits_on_its_own(self.dialect, connection, statement)
        # MySQL/MariaDB: before every statement, since the next DDL statement (or a concurrent
        # runner's commit) makes whatever ran before it permanent; PostgreSQL: before those
        # that commit, the rest being covered by the check before the revision commits.
        if committing or self.dialect in {"mysql", "mariadb"}:
            where = f"of revision {self.current}" if self.current else "outside any revision"
            verify_lock(f"before a statement {where}")
        if self.current is None:
            return
        self.sent.append(statement[:STATEMENT_CHARS])
        if not committing:
            return
        # On MySQL a DDL statement also commits the statements sent before it in the revision.
        self.committed = list(self.sent)
        self._record()

    def after_statement(self) -> None:
        """SQLAlchemy's after_cursor_execute: what was sent has run (an error skips this)."""
        self.done = len(self.sent)

    def before_commit(self) -> None:
        """A commit inside a revision before Alembic's own (`autocommit_block()` commits the
        revision's transaction so far): checked and recorded like a committing statement."""
        from tasks.guard.lock import verify_lock

        if self.current is None or self.applied or self.stopped is not None:
            return  # stopped: an autocommit block's closing no-op commit on the way out
        try:
            verify_lock(f"before revision {self.current} committed part of itself")
            self.committed = list(self.sent)
            if self.committed:
                self._record()
        except LockLost as lost:
            self.stopped = lost
            raise

    def note_session(self, connection: Connection) -> None:
        """Ask the server which session `connection` is (once), before a statement guard
        listens: the tasks' own question is not the revision's statement."""
        if self.dialect != "sqlite" and self.session_id is None:
            self.session_id = server_session_id(connection, self.dialect)

    @contextmanager
    def listening(self, connection: Connection) -> Iterator[None]:
        """Check and record the statements and commits of `connection` for the block."""
        from sqlalchemy import event

        self.note_session(connection)

        def before(
            conn: Connection, _cursor: Any, statement: str, *_rest: Any
        ) -> None:  # before_cursor_execute(conn, cursor, statement, parameters, context, many)
            self.before_statement(conn, statement)

        def commit(_conn: Connection) -> None:
            self.before_commit()

        def after(*_args: Any) -> None:
            self.after_statement()

        event.listen(connection, "before_cursor_execute", before)
        event.listen(connection, "after_cursor_execute", after)
        event.listen(connection, "commit", commit)
        try:
            yield
        finally:
            event.remove(connection, "before_cursor_execute", before)
            event.remove(connection, "after_cursor_execute", after)
            event.remove(connection, "commit", commit)

    def _record(self) -> None:
        from tasks.guard.lock import held_lock_connection

        lock_connection = held_lock_connection()
        if lock_connection is None:
            return  # no lock with a connection (SQLite, or a caller that took none)
        table = progress_table(self.session.environment.schema)
        try:
            if self.row_id is None:
                _ensure_table(lock_connection, table)
                record = self.session.record
                result = lock_connection.execute(
                    table.insert().values(
                        revision=self.current,
                        direction=self.direction,
                        state="running",
                        started_at=datetime.now(UTC),
                        task=record.task,
                        operator=record.operator,
                        host=record.host,
                        session_id=self.session_id,
                        rerunnable=int(self.rerunnable),
                        statements=json.dumps([redact(s) for s in self.committed]),
                    )
                )
                key = result.inserted_primary_key
                self.row_id = int(key[0]) if key is not None else None
            else:
                lock_connection.execute(
                    table.update()
                    .where(table.c.id == self.row_id)
                    .values(statements=json.dumps([redact(s) for s in self.committed]))
                )
        except Exception as error:  # the lock's session is gone: nothing may commit now
            from tasks.core.engines import describe_database_error

            raise LockLost(
                f"migration lock lost before a statement of revision {self.current} that "
                f"commits on its own (recording it failed: {describe_database_error(error)}); "
                "the run stopped"
            ) from None

    def in_progress(self) -> str | None:
        """The revision running now; None between revisions (the last one reported applied)."""
        return None if self.applied else self.current

    def failed(self, error: str, residue: dict[str, list[str]] | None) -> str:
        """The revision in progress did not finish: its row says so, with what it left.
        Returns the sentence the run's error line ends with."""
        revision = self.in_progress()
        if revision is None:
            return ""
        if self.row_id is None:
            return ""  # nothing committed on its own: the revision's transaction rolls back
        if self._last_committing_statement_failed():
            self.committed = self.committed[:-1]
            if not self.committed:
                self._forget_finished()  # its row goes: the revision changed nothing
                return ""
        self._mark_failed(error, residue or {})
        collection = self.session.record.task.rsplit(".", 1)[0]
        count = len(self.committed)
        return (
            f"; revision {revision} stopped part way: {count} of its statements had committed "
            f"on their own (listed in the run log), so it stays failed until "
            f"{repair_hint(collection, revision)}"
        )

    def _last_committing_statement_failed(self) -> bool:
        """PostgreSQL and SQLite run a statement sent outside a transaction atomically: one that
        raised (or was cancelled on the server) committed nothing. MySQL/MariaDB commit what
        came before a DDL statement even when it fails: there nothing is taken back."""
        return self.dialect in {"postgresql", "sqlite"} and self.done < len(self.committed)

    def _mark_failed(self, error: str, residue: dict[str, list[str]]) -> None:
        """Through the lock's connection, or a new one when that one is gone (a lost lock):
        the row is this run's own, so writing it needs no lock."""
        from tasks.core.engines import connect
        from tasks.guard.lock import held_lock_connection

        self.session.record.details["unfinished_revision"] = {
            "revision": self.current,
            "statements": self.committed,
            "residue": residue,
        }
        table = progress_table(self.session.environment.schema)
        update = (
            table.update()
            .where(table.c.id == self.row_id)
            .values(
                state="failed",
                error=redact(error)[:2000],
                residue=json.dumps(residue),
                statements=json.dumps([redact(s) for s in self.committed]),
            )
        )
        lock_connection = held_lock_connection()
        with suppress(Exception):
            if lock_connection is not None:
                lock_connection.execute(update)
                return
        environment = self.session.environment
        with (
            suppress(Exception),
            connect(environment, self.session.settings.connect_timeout) as connection,
            connection.begin(),
        ):
            connection.execute(update)


def _ensure_table(connection: Connection, table: Table) -> None:
    """Create the table unless it exists, also when two targets' runners race to create it."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import DBAPIError

    try:
        table.create(connection, checkfirst=True)
    except DBAPIError:
        if not inspect(connection).has_table(table.name, schema=table.schema):
            raise


def server_session_id(connection: Connection, dialect: str) -> int | None:
    """The migration connection's server session, to tell later whether it still runs."""
    from sqlalchemy import text

    query = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}.get(
        "mysql" if dialect == "mariadb" else dialect
    )
    if query is None:
        return None
    try:
        return int(connection.execute(text(query)).scalar() or 0) or None
    except Exception:
        return None
    finally:
        connection.rollback()


@contextmanager
def watching(session: Session, connection: Connection) -> Iterator[RevisionWatch]:
    """The watch for one run (this thread's current); `listening` attaches it to the connection
    the revisions run on."""
    watch = RevisionWatch(session, connection)
    previous = getattr(_THREAD, "watch", None)
    _THREAD.watch = watch
    try:
        yield watch
    finally:
        _THREAD.watch = previous


def repair_hint(collection: str, revision: str) -> str:
    """The command that records what a person did; fleets have no repair of their own."""
    from tasks.core import suggestions

    repair = suggestions.command(collection, "repair", f"-r {revision} --applied")
    if repair is None:
        return f"the environment's `repair -r {revision} --applied` or `--reverted`"
    return f"`{repair}` or `--reverted`"


def resumable_from_here() -> None:
    """Tell this thread's watch (if any) that a resumable operation begins (`op.backfill`)."""
    watch = getattr(_THREAD, "watch", None)
    if watch is not None:
        watch.mark_resumable()


def step_starting(revision: str, *, is_upgrade: bool, module: Any = None) -> None:
    """Tell this thread's watch (if any) that Alembic is about to begin `revision`."""
    watch = getattr(_THREAD, "watch", None)
    if watch is not None:
        watch.step_starting(revision, is_upgrade=is_upgrade, module=module)


# --- repair ---------------------------------------------------------------------------------


def unfinished_row(connection: Connection, schema: str | None, revision: str) -> Unfinished:
    """The row `repair` resolves; none is bad input (exit 2)."""
    rows = [row for row in read_unfinished(connection, schema) if row.revision == revision]
    if not rows:
        raise UsageError(f"no unfinished run of revision {revision} is recorded: nothing to repair")
    return rows[-1]


def remove_rows(connection: Connection, schema: str | None, revision: str) -> None:
    """Inside the caller's transaction: the rows of `revision` are resolved."""
    table = progress_table(schema)
    connection.execute(table.delete().where(table.c.revision == revision))
