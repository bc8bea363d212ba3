"""The statement guard: every statement a guarded run sends to the database, judged before it runs.

The plan judges a revision's offline rendering, and a revision is Python: one that asks
`context.opts["as_sql"]`, keeps module state between its two loads, reads an environment
variable, calls a helper module or uses a `@compiles` construct can send other statements when
applied than the plan showed. The plan stays the preview (and the place consent is asked); this
guard is the enforcement. Installed on the task's connection for the length of the Alembic run
(SQLAlchemy's `before_cursor_execute`, which Alembic, env.py, `op.execute`,
`op.get_bind().execute`, `exec_driver_sql` and autocommit blocks all go through; a raw DBAPI
cursor taken from `connection.connection` is wrapped the same way), it classifies each statement
with the plan's classifier and refuses, before the server sees it, any statement whose findings
the consent given for the revision running does not cover:

- a statement the plan showed for that revision, word for word, was judged there (and the run
  only started with consent for what it showed): it passes without being parsed again, which is
  most of why the guard costs little;
- any other statement passes only when it needs no consent, or every rule it breaks is covered
  for that revision: by the plan's findings the operator consented to (`--allow-destructive` or
  typed), or by the revision's written `consent = {rule: reason}`;
- a refusal is final for the run: every later statement is refused too (a revision that catches
  the error cannot go on), the transaction is rolled back by the caller, and the run exits 3
  naming the revision and the statement (one line, redacted).

Statements before the first revision starts (env.py's own) and Alembic's bookkeeping are judged
the same way with no consent at all.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tasks.core.errors import Refused
from tasks.core.redaction import redact
from tasks.lint import classifier as lint

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from tasks.core.session import Session
    from tasks.plan.steps import Plan

ENV_PY = "env.py"  # who runs statements before the first revision starts
STATEMENT_SHOWN = 160  # characters of a refused statement in the error line


class StatementRefused(Refused):
    """A statement the consent for its revision does not cover; nothing after it ran."""

    def __init__(self, message: str, revision: str, statement: str, rules: list[str]) -> None:
        super().__init__(message)
        self.revision = revision
        self.statement = statement
        self.rules = rules


@dataclass
class RevisionConsent:
    """What one revision may run: the statements the plan showed, and the rules consented to."""

    planned: frozenset[str] = frozenset()
    covered: frozenset[str] = frozenset()
    planned_sql: str = ""  # the plan's SQL, so the catalog knows the revision's own patterns


@dataclass
class StatementGuard:
    dialect: str
    consents: dict[str, RevisionConsent] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()
    schema: str | None = None  # the environment's schema: where Alembic's version table is
    shadowed: frozenset[str] = frozenset()  # built-in names a user function also has
    revision: str | None = None
    refused: StatementRefused | None = None
    paused: int = 0  # inside `trusting`: the tasks' own statements
    seen: int = 0  # statements judged (for the bench and the run log)
    parsed: int = 0  # of those, statements the plan had not shown (classified here)
    _catalog: lint.Catalog = field(default_factory=lint.Catalog)
    _approved: str | None = None  # the statement SQLAlchemy is handing its cursor right now
    _attached: set[int] = field(default_factory=set)
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def enter(self, revision: str) -> None:
        """Alembic is about to start `revision`: its consent applies from here on."""
        self.revision = revision
        self._catalog = lint.Catalog(shadowed=self.shadowed, live=True)
        self._catalog.new_revision()
        planned = self.consents.get(revision)
        sql = planned.planned_sql if planned is not None else ""
        # What the seed learns comes from constraints and SQLite's batch tables only: a revision
        # without either is not parsed a second time (most of a long history).
        if sql and (lint.BATCH_PREFIX in sql or "constraint" in sql.lower()):
            parts = lint.split(sql, self.dialect, self.schema)
            lint.seed_catalog(self._catalog, parts, self.dialect)

    def check(self, statement: str, parameters: Any = None) -> None:
        """Raise StatementRefused unless `statement` may run now."""
        if self.refused is not None:
            raise self.refused
        if self.paused:
            return
        self.seen += 1
        if statement == "BEGIN" and self.dialect == "sqlite":
            return  # the tasks' own: SQLAlchemy's begin hook for transactional SQLite
        consent = self.consents.get(self.revision or "", RevisionConsent())
        if as_rendered(statement) in consent.planned:
            return
        self.parsed += 1
        findings = self._findings(statement)
        needing = [finding for finding in findings if finding.severity in lint.NEEDS_CONSENT]
        uncovered = [finding for finding in needing if finding.rule not in consent.covered]
        if uncovered:
            self.refused = self._refusal(statement, uncovered)
            raise self.refused

    def _findings(self, statement: str) -> list[lint.Finding]:
        text = readable(statement, self.dialect)
        return lint.classify_live(text, self.dialect, self.ignored, self._catalog, self.schema)

    def _refusal(self, statement: str, uncovered: list[lint.Finding]) -> StatementRefused:
        revision = self.revision or ENV_PY
        rules = list(dict.fromkeys(str(finding.rule) for finding in uncovered))
        shown = one_line(statement)
        where = f"revision {revision}" if self.revision else "env.py (before any revision)"
        message = (
            f"{where} sent a statement the plan did not show and no consent covers "
            f"({', '.join(rules)}): {shown}; refused before it ran, nothing after it ran "
            f"(to apply it, give consent in the revision: consent = {{{rules[0]!r}: 'why'}})"
        )
        return StatementRefused(message, revision, shown, rules)

    # --- installing on a connection -------------------------------------------------------

    @contextmanager
    def installed(self, connection: Connection) -> Iterator[StatementGuard]:
        """The guard on `connection` (and raw cursors of its DBAPI connection) for the block,
        and on any other connection env.py migrates on that `attach` is given meanwhile."""
        self.attach(connection)
        try:
            yield self
        finally:
            for undo in reversed(self._undo):
                # A connection env.py already closed has nothing left to restore.
                with contextlib.suppress(Exception):
                    undo()
            self._undo.clear()
            self._attached.clear()

    def attach(self, connection: Connection) -> None:
        """Judge every statement sent on `connection` from now on (once per connection)."""
        from sqlalchemy import event

        if id(connection) in self._attached:
            return
        self._attached.add(id(connection))

        def before_cursor_execute(_conn, _cursor, statement, parameters, _context, _executemany):
            self.check(statement, parameters)
            self._approved = statement

        event.listen(connection, "before_cursor_execute", before_cursor_execute)
        self._undo.append(
            lambda: event.remove(connection, "before_cursor_execute", before_cursor_execute)
        )
        # The pool's proxy (SQLAlchemy's _ConnectionFairy) hands `op.get_bind().connection`
        # cursors out; its `dbapi_connection` is swapped for a guarded one while the run lasts.
        fairy: Any = connection.connection
        real = fairy.dbapi_connection
        proxy = _GuardedDBAPIConnection(real, self)
        fairy.dbapi_connection = proxy

        def restore() -> None:
            if fairy.dbapi_connection is proxy:
                fairy.dbapi_connection = real

        self._undo.append(restore)

    def raw_check(self, statement: str) -> None:
        """A cursor's statement: SQLAlchemy's own (approved by the event just now) passes."""
        if self._approved is not None and statement is self._approved:
            self._approved = None
            return
        self.check(statement)


class _GuardedDBAPIConnection:
    """The DBAPI connection as revisions reach it (`op.get_bind().connection`): its cursors
    judge what they execute. Everything else is the real connection's."""

    def __init__(self, real: Any, guard: StatementGuard) -> None:
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_guard", guard)

    def cursor(self, *args: Any, **kwargs: Any) -> _GuardedCursor:
        return _GuardedCursor(self._real.cursor(*args, **kwargs), self._guard)

    def execute(self, statement: str, *args: Any, **kwargs: Any) -> Any:  # sqlite3's shortcut
        self._guard.raw_check(statement)
        return self._real.execute(statement, *args, **kwargs)

    def executemany(self, statement: str, *args: Any, **kwargs: Any) -> Any:
        self._guard.raw_check(statement)
        return self._real.executemany(statement, *args, **kwargs)

    def executescript(self, script: str) -> Any:
        self._guard.check(script)
        return self._real.executescript(script)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real, name, value)


class _GuardedCursor:
    def __init__(self, real: Any, guard: StatementGuard) -> None:
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_guard", guard)

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        self._guard.raw_check(statement if isinstance(statement, str) else str(statement))
        return self._real.execute(statement, *args, **kwargs)

    def executemany(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        self._guard.raw_check(statement if isinstance(statement, str) else str(statement))
        return self._real.executemany(statement, *args, **kwargs)

    def executescript(self, script: str) -> Any:
        self._guard.check(script)
        return self._real.executescript(script)

    def callproc(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self._guard.check(f"CALL {name}()")
        return self._real.callproc(name, *args, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._real)

    def __enter__(self) -> _GuardedCursor:
        self._real.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._real.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real, name, value)


def for_plan(session: Session, planned: Plan, *, consented: bool) -> StatementGuard:
    """The guard for applying `planned`: each revision may run the statements the plan showed
    for it, and anything else whose rules are covered: the plan's findings for that revision
    when the operator consented to them (`consented`), and the revision's written consent."""
    consents = {}
    for item in planned.revisions:
        shown = (
            {str(f.rule) for f in item.findings if f.severity in lint.NEEDS_CONSENT}
            if consented
            else set()
        )
        consents[item.revision] = RevisionConsent(
            planned=frozenset(text.strip() for text in item.statements),
            covered=frozenset(shown | set(item.consent)),
            planned_sql=item.sql,
        )
    return StatementGuard(
        dialect=session.environment.dialect,
        consents=consents,
        ignored=frozenset(session.settings.lint_ignore),
        schema=session.environment.schema,
        shadowed=planned.shadowed,
    )


@contextmanager
def trusting(guard: StatementGuard | None) -> Iterator[None]:
    """The tasks' own bookkeeping (checksums) inside a revision's transaction: not judged."""
    if guard is None or guard.refused is not None:
        yield
        return
    guard.paused += 1
    try:
        yield
    finally:
        guard.paused -= 1


@contextmanager
def guarding(guard: StatementGuard | None, connection: Connection) -> Iterator[None]:
    """`guard` installed on `connection` for the block (nothing when there is no guard). A
    refusal the revision caught and swallowed still ends the run: it is raised here."""
    if guard is None:
        yield
        return
    previous = getattr(_THREAD, "guard", None)
    _THREAD.guard = guard
    try:
        with guard.installed(connection):
            yield
    finally:
        _THREAD.guard = previous
    if guard.refused is not None:
        raise guard.refused


_THREAD = threading.local()  # the guard `guarding` installed for this thread's run


@contextmanager
def trusting_current() -> Iterator[None]:
    """`trusting` for the guard of this thread's run, if any: for the tasks' own statements
    sent from inside a revision, where the guard itself is out of reach (the transaction
    control `op.lock_retries` puts around each statement it retries; the statement itself is
    still judged)."""
    with trusting(getattr(_THREAD, "guard", None)):
        yield


# Driver placeholders (psycopg2's and PyMySQL's `%(name)s` / `%s`, with `%%` for a literal `%`)
# as the dialect's parser reads a parameter: `$1` for PostgreSQL, `?` for sqlglot's dialects.
_PLACEHOLDER = re.compile(r"%%|%\([^)]*\)s|%s")


def readable(statement: str, dialect: str) -> str:
    """`statement` with the driver's placeholders turned into ones the classifier parses."""
    if "%" not in statement:
        return statement
    counter = iter(range(1, 1 << 30))

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        return f"${next(counter)}" if dialect == "postgresql" else "?"

    return _PLACEHOLDER.sub(replace, statement)


def as_rendered(statement: str) -> str:
    """A statement as Alembic's offline rendering writes it (tabs as four spaces, stripped), so
    the statements the plan showed are recognised word for word."""
    return statement.replace("\t", "    ").strip()


def one_line(statement: str) -> str:
    """A refused statement as the error line shows it: one line, redacted, shortened."""
    text = redact(" ".join(statement.split()))
    return text if len(text) <= STATEMENT_SHOWN else text[: STATEMENT_SHOWN - 3] + "..."
