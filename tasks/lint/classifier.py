"""Classifying the SQL a revision runs: what needs a human's consent, and why (the entry point).

Where things live: `rules` (every rule id, its severity and help: one registry), `findings`
(Finding, Catalog), `sql` (splitting and `classify`), `postgres` (pglast), `mysql` (sqlglot, for
MySQL/MariaDB and SQLite), `allowlists` (what passes without consent), `squawk` (squawk's
findings merged into ours), `source_scan` (a revision's Python source). This module keeps the
names callers use and `lint()`, which puts the classifier and squawk together.

The classifier fails closed. Each statement is split and parsed by a parser made for its
dialect (PostgreSQL's own grammar through `pglast`; `sqlglot` for MySQL/MariaDB and SQLite),
never by regular expressions, and passes without consent only when it parsed and is of a kind
known to be safe (the allow-list in `_pg_statement` / `_glot_statement`). Everything else
needs consent and says why: what is destructive (drops, retypes, renames, deletes, NOT NULL
without the validated-check pattern), what blocks traffic on PostgreSQL (an index built
without CONCURRENTLY, a constraint validated under an exclusive lock), and whatever cannot be
known statically (unparsable text, `DO` blocks, dynamic SQL, calls of unknown functions,
unknown statement kinds). Those last ones are reported as destructive: not knowing is not safe.

Decisions worth knowing:
- INSERT adds rows and is safe; UPDATE is safe only as a backfill (every column it sets is
  tested `IS NULL` in its WHERE), since any other UPDATE overwrites values nobody can get
  back; DELETE, TRUNCATE and MERGE always need consent.
- DROP INDEX CONCURRENTLY is safe: an index holds no data, and it takes no blocking lock.
- A statement on a table created earlier in the same SQL (a new, empty table) needs no
  CONCURRENTLY, NOT VALID or validated check.
- Widening `varchar(n)` (to a larger n, unbounded varchar or text) is safe when the column's
  current type is known, from earlier statements or from the `Catalog`'s lookup (the live
  database); an unknown current type is a type change, which needs consent.
- CREATE TABLE IF NOT EXISTS may do nothing: it marks no table new and teaches no column type.
- Session settings pass only from a short allow-list (timeouts, messages, memory, character
  set); a timeout set to 0 switches the run's guard off, and RESET undoes it: both need consent.
  MariaDB's ALTER TABLE options pass only in their online forms (no ENGINE=, no COPY/LOCK).

On PostgreSQL squawk runs as well; its findings are merged with ours into one finding per
statement and rule (`SQUAWK_ALIASES` maps squawk's names for the hazards we judge onto ours,
keeping squawk's `help`), and the hazards our classifier judges safe with knowledge squawk
lacks (a validated check before SET NOT NULL, a widened varchar) are not reported twice or
wrongly. Rules named in `migrations.lint.ignore` are dropped from both.
"""

from __future__ import annotations

from tasks.lint import squawk
from tasks.lint.allowlists import SAFE_FUNCTIONS
from tasks.lint.findings import (
    BATCH_PREFIX,
    VERSION_TABLE,
    Catalog,
    Finding,
    Statement,
    Verdict,
    finding,
)
from tasks.lint.rules import BLOCKING, DESTRUCTIVE, NEEDS_CONSENT, SEVERITIES, WARNING, Rule
from tasks.lint.source_scan import RUNS_ONLINE, runs_differently_online, scan_source
from tasks.lint.sql import classify, classify_live, seed_catalog, split, statements
from tasks.lint.squawk import JUDGED, SQUAWK_ALIASES, SquawkReport, merge, squawk_binary

__all__ = [
    "BATCH_PREFIX",
    "BLOCKING",
    "DESTRUCTIVE",
    "JUDGED",
    "NEEDS_CONSENT",
    "RUNS_ONLINE",
    "SAFE_FUNCTIONS",
    "SEVERITIES",
    "SQUAWK_ALIASES",
    "VERSION_TABLE",
    "WARNING",
    "Catalog",
    "Finding",
    "Rule",
    "SquawkReport",
    "Statement",
    "Verdict",
    "classify",
    "classify_live",
    "finding",
    "lint",
    "merge",
    "runs_differently_online",
    "scan_source",
    "seed_catalog",
    "split",
    "squawk_binary",
    "statements",
]


def lint(
    sql: str,
    dialect: str,
    ignored: frozenset[str],
    preamble: str = "",
    pg_version: str | None = None,
    catalog: Catalog | None = None,
    schema: str | None = None,
) -> list[Finding]:
    """Our classifier on every dialect; on PostgreSQL merged with squawk's findings. `schema`
    is where Alembic's version table is (the environment's schema)."""
    findings = classify(sql, dialect, ignored, catalog, schema)
    if dialect != "postgresql":
        return findings
    reports = squawk.reports(sql, preamble, pg_version)
    if isinstance(reports, Finding):
        return [*findings, reports]
    return merge(findings, reports, ignored)
