"""What the classifier hands back and what it remembers while it reads a revision.

`Finding` is one rule broken by one statement; `Catalog` is the classifier's knowledge of the
schema as the revision's statements go by (tables it created, column types, checks validated,
locks held), shared by the dialect modules; `Verdict` is a statement's list of hits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from tasks.lint.rules import Hit, Rule, help_for, hit, severity

VERSION_TABLE = "alembic_version"  # Alembic's bookkeeping, not the revision's own work
BATCH_PREFIX = "_alembic_tmp_"  # SQLite batch mode's temporary table


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    message: str
    statement: str
    source: str = "classifier"
    help: str = ""  # how to do it safely (squawk's advice, or ours)
    subject: str = ""  # what it touches, for the summary line: "drop column users.legacy"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def filled_in(catalog: Catalog, table: str, targets: set[str]) -> bool:
    """Every column set is new in this revision (added, or its table created): a backfill."""
    if table in catalog.created:
        return True
    return all((table, column) in catalog.added for column in targets)


def finding(rule: Rule, message: str, statement: str = "", source: str = "classifier") -> Finding:
    """A finding with the severity and help the registry gives `rule`."""
    return Finding(rule, severity(rule), message, statement, source, help_for(rule))


@dataclass
class Statement:
    """One statement as written (comments around it dropped, inside it kept)."""

    text: str
    bookkeeping: bool = False  # BEGIN/COMMIT, alembic_version: shown, never judged


@dataclass
class Catalog:
    """What the classifier knows about the schema while it reads a plan, statement by statement.

    `lookup(table, column)` answers for columns the SQL itself never defined (the live
    database, reflected on demand); None means unknown, and unknown is never safe.
    """

    lookup: Callable[[str, str], str | None] | None = None
    created: set[str] = field(default_factory=set)  # tables created in this revision
    types: dict[tuple[str, str], str] = field(default_factory=dict)  # "varchar(50)", "text"
    checks: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (table, col)
    validated: set[tuple[str, str]] = field(default_factory=set)  # NOT NULL proven by a check
    not_null: set[tuple[str, str]] = field(default_factory=set)  # SET NOT NULL seen
    # Names this revision adds as `CHECK (col IS NOT NULL)` checks: a `DROP CONSTRAINT IF
    # EXISTS` of one of them clears a leftover of the same pattern from a failed earlier run.
    not_null_checks_added: set[tuple[str, str]] = field(default_factory=set)
    # Tables an ALTER TABLE locked (ACCESS EXCLUSIVE) in the open transaction: the lock is held
    # until COMMIT, so a VALIDATE after it in the same transaction scans under that lock.
    locked: set[str] = field(default_factory=set)
    # Columns this revision added to existing tables: an UPDATE that sets only these fills
    # them in (a backfill), it overwrites nobody's data.
    added: set[tuple[str, str]] = field(default_factory=set)
    in_transaction: bool = True  # Alembic runs a revision in one, unless the SQL says otherwise
    rebuilt: set[str] = field(default_factory=set)  # tables SQLite batch mode rebuilds
    # Allow-listed function names a user function also has (PostgreSQL: outside pg_catalog), so
    # an unqualified call may not reach the built-in: read from the database by the caller.
    shadowed: frozenset[str] = frozenset()
    # The statement guard judging a run (not the plan): constraints the revision's plan adds may
    # be dropped first, as the tasks' own `op.drop_unvalidated_constraint` does with a leftover.
    live: bool = False
    constraints_added: set[tuple[str, str]] = field(default_factory=set)

    def column_type(self, table: str, column: str) -> str | None:
        known = self.types.get((table, column))
        if known is None and self.lookup is not None:
            try:
                known = self.lookup(table, column)
            except Exception:  # reflection failed: the type stays unknown (never safe)
                known = None
        return known

    def new_revision(self) -> None:
        """Tables created by an earlier revision are no longer "new" (they may be filled)."""
        self.created.clear()
        self.added.clear()
        self.not_null_checks_added.clear()
        self.rebuilt.clear()
        self.constraints_added.clear()
        self.locked.clear()
        self.in_transaction = True

    def transaction(self, kind: str) -> None:
        """BEGIN opens a transaction; COMMIT/ROLLBACK end it and release its locks."""
        self.locked.clear()
        self.in_transaction = kind in {"BEGIN", "START"}


# (rule, severity, message, subject) for one statement; an empty list means known safe.
Verdict = list[Hit]


def unparsable(dialect: str) -> Verdict:
    return [hit(Rule.UNPARSABLE, f"could not be parsed as {dialect} SQL", "unparsable SQL")]


def unknown(kind: str) -> tuple[str, str, str, str]:
    message = f"{kind}: not a statement kind known to be safe"
    return hit(Rule.UNKNOWN_STATEMENT, message, kind)
