"""Checksums of applied revisions: a revision edited after it ran somewhere is refused.

Every guarded run that applies a revision records its fingerprint (`fingerprints.py`) in the
database's `migration_checksums` table, inside the revision's own transaction, with who applied
it and when; a revision reverted loses its row. Before `upgrade` and `downgrade` do anything
(and in `preflight`), the applied revisions' files are compared with those rows: one that
changed is refused (exit 14) with the environment, the revision, when and by whom it was applied,
and the lines that changed. `repair -r REV --accept-edit --reason ...` records the new
fingerprint after review (the audit row keeps the reason). A database with no rows yet (adopted,
or applied before checksums existed) gets them at its first guarded run, said once.

The table lives beside `alembic_version` (in the tenant's schema for schema fleets) and is one of
the tool's own tables, invisible to autogenerate, `check` and sync.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.console import plural
from tasks.core.errors import ExitCode, MigrationsError, UsageError
from tasks.core.suggestions import collection_of, command
from tasks.history.fingerprints import Fingerprint, fingerprint, short_diff

if TYPE_CHECKING:
    from alembic.script import Script, ScriptDirectory
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

    from tasks.core.session import Session

CHECKSUM_TABLE = "migration_checksums"
# A squash baseline names the fingerprint of the revision it replaces under this module-level
# name: databases that applied the old revision accept the baseline in its place.
REPLACES = "replaces_checksum"
# `Connection.info` key: the revisions that had a row when the run began.
RECORDED = "migration_checksums.recorded"


class EditedRevision(MigrationsError):
    """A revision's file changed after the database applied it."""

    exit_code = ExitCode.EDITED_REVISION
    outcome = "refused"


@dataclass(frozen=True)
class Recorded:
    revision: str
    checksum: str
    source: str | None
    applied_at: datetime | None
    applied_by: str | None
    note: str | None


@dataclass(frozen=True)
class Edit:
    """An applied revision whose file no longer has the fingerprint recorded for it."""

    recorded: Recorded
    now: Fingerprint

    def when(self) -> str:
        at = self.recorded.applied_at
        when = f"{_utc(at):%Y-%m-%d %H:%M} UTC" if at is not None else "at an unknown time"
        return f"applied {when} by {self.recorded.applied_by or 'unknown'}"

    def diff(self) -> list[str]:
        if self.recorded.source is None:
            return ["(the recorded source is not available: compare with git history)"]
        return short_diff(self.recorded.source, self.now.text)


@cache
def checksum_table() -> Table:
    from sqlalchemy import Column, DateTime, MetaData, String, Table, Text

    return Table(
        CHECKSUM_TABLE,
        MetaData(),
        Column("revision", String(255), primary_key=True),
        Column("checksum", String(64), nullable=False),
        Column("source", Text),
        Column("applied_at", DateTime(timezone=True)),
        Column("applied_by", String(255)),
        Column("host", String(255)),
        Column("recorded_at", DateTime(timezone=True), nullable=False),
        Column("note", Text),
    )


# --- reading ------------------------------------------------------------------------------------


def read_records(connection: Connection) -> dict[str, Recorded] | None:
    """The recorded fingerprints by revision; None when the table does not exist yet."""
    from sqlalchemy import inspect, select

    if not inspect(connection).has_table(CHECKSUM_TABLE):
        connection.rollback()
        return None
    table = checksum_table()
    rows = connection.execute(select(table)).mappings().all()
    connection.rollback()
    return {
        row["revision"]: Recorded(
            row["revision"],
            row["checksum"],
            row["source"],
            row["applied_at"],
            row["applied_by"],
            row["note"],
        )
        for row in rows
    }


def applied_revisions(script: ScriptDirectory, heads: tuple[str, ...]) -> list[Script]:
    """Every revision a database at `heads` has applied, base first."""
    if not heads:
        return []
    found = [
        revision for revision in script.iterate_revisions(heads, "base") if revision is not None
    ]
    return list(reversed(found))


def find_edits(applied: list[Script], records: dict[str, Recorded]) -> list[Edit]:
    """Applied revisions whose recorded fingerprint their file no longer has (a squash baseline
    that names the fingerprint it replaces is not an edit)."""
    edits = []
    for revision in applied:
        recorded = records.get(revision.revision)
        if recorded is None:
            continue
        now = fingerprint(revision)
        if now.checksum in {recorded.checksum} or recorded.checksum == replaced_checksum(revision):
            continue
        edits.append(Edit(recorded, now))
    return edits


def replaced_checksum(revision: Script) -> str | None:
    """The `replaces_checksum = "..."` a squash baseline declares, if any."""
    tree = ast.parse(Path(revision.path).read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == REPLACES for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


# --- guarding a run -------------------------------------------------------------------------


def verify_applied(
    session: Session, connection: Connection, script: ScriptDirectory, heads: tuple[str, ...]
) -> None:
    """Before an upgrade or downgrade asks or changes anything: refuse when a revision applied
    here was edited since (read-only)."""
    edits = find_edits(applied_revisions(script, heads), read_records(connection) or {})
    if edits:
        raise refusal(session, edits)


def prepare_records(
    session: Session, connection: Connection, script: ScriptDirectory, heads: tuple[str, ...]
) -> None:
    """Right before revisions run: the table exists, and applied revisions without a row get
    one (a database adopted or applied before checksums existed; said once)."""
    ensure_table(connection)
    applied = applied_revisions(script, heads)
    records = read_records(connection) or {}
    # Rows that exist, so recording a revision knows whether one must be replaced (a row left by
    # a revert outside the tasks) or only inserted: one round trip per revision, not two.
    connection.info[RECORDED] = set(records) | {revision.revision for revision in applied}
    missing = [revision for revision in applied if revision.revision not in records]
    if not missing:
        return
    note = "recorded at the first guarded run (already applied; adopted as it is)"
    for revision in missing:
        _upsert(connection, session, fingerprint(revision), note=note, applied=False)
    connection.commit()
    session.console.line(
        f"{session.environment.name}: recorded the checksums of "
        f"{plural(len(missing), 'applied revision')} (first run with checksums: an edit to them "
        "is refused from now on)"
    )
    session.record.details["checksums_adopted"] = [revision.revision for revision in missing]


def refusal(session: Session, edits: list[Edit]) -> EditedRevision:
    """Print each edit's diff and return the one-line refusal naming the first."""
    name = session.environment.name
    for edit in edits:
        session.console.line(
            f"{name}: revision {edit.now.revision} changed since it was {edit.when()}:"
        )
        for line in edit.diff():
            session.console.line(f"    {line}")
    first = edits[0]
    changed = [line for line in first.diff() if line[:1] in "+-"][:2]
    others = f" (and {plural(len(edits) - 1, 'other revision')})" if len(edits) > 1 else ""
    collection = collection_of(session.record.task) or name
    arguments = f'-r {first.now.revision} --accept-edit --reason "..."'
    repair = command(collection, "repair", arguments) or f"an environment's repair {arguments}"
    session.record.details["edited_revisions"] = [edit.now.revision for edit in edits]
    return EditedRevision(
        f"{name}: revision {first.now.revision}{others} was edited after it was "
        f"{first.when()}: {' '.join(changed) or 'its code changed'}; nothing changed. Review "
        f"the edit, then `{repair}`"
    )


def ensure_table(connection: Connection) -> None:
    """Create the table unless it exists (several runners may race: the loser finds it)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import DBAPIError

    table = checksum_table()
    if connection.in_transaction():
        connection.commit()
    try:
        table.create(connection, checkfirst=True)
        connection.commit()
    except DBAPIError:
        connection.rollback()
        if not inspect(connection).has_table(CHECKSUM_TABLE):
            raise
        connection.rollback()


def revision_applied(
    session: Session, connection: Connection, script: ScriptDirectory, revision_id: str
) -> None:
    """Inside the revision's transaction: record what was applied, by whom, when."""
    revision = script.get_revision(revision_id)
    if revision is None:
        return
    replace = revision_id in connection.info.get(RECORDED, {revision_id})
    _upsert(
        connection, session, fingerprint(revision), note="applied", applied=True, replace=replace
    )


def revision_reverted(connection: Connection, revision_id: str) -> None:
    """Inside the revision's transaction: a reverted revision is no longer applied here."""
    table = checksum_table()
    connection.execute(table.delete().where(table.c.revision == revision_id))


def reconcile(
    session: Session, connection: Connection, script: ScriptDirectory, heads: tuple[str, ...]
) -> None:
    """After a stamp: the rows follow what the version table now says is applied."""
    ensure_table(connection)
    applied = {revision.revision: revision for revision in applied_revisions(script, heads)}
    records = read_records(connection) or {}
    table = checksum_table()
    for stale in set(records) - set(applied):
        if script.get_revision(stale) is not None:  # known but no longer applied here
            connection.execute(table.delete().where(table.c.revision == stale))
    for revision_id, revision in applied.items():
        if revision_id not in records:
            note = "recorded by stamp (not run)"
            _upsert(connection, session, fingerprint(revision), note=note, applied=False)
    connection.commit()


def _upsert(
    connection: Connection,
    session: Session,
    print_: Fingerprint,
    *,
    note: str,
    applied: bool,
    replace: bool = True,
) -> None:
    table = checksum_table()
    now = datetime.now(UTC)
    if replace:
        connection.execute(table.delete().where(table.c.revision == print_.revision))
    connection.execute(
        table.insert().values(
            revision=print_.revision,
            checksum=print_.checksum,
            source=print_.text,
            applied_at=now if applied else None,
            applied_by=(session.record.operator or session.record.user) if applied else None,
            host=session.record.host,
            recorded_at=now,
            note=note,
        )
    )


# --- preflight and repair -------------------------------------------------------------------


def preflight_check(
    connection: Connection, script: ScriptDirectory, heads: tuple[str, ...]
) -> tuple[bool, str, list[Edit]]:
    """(ok, the line preflight prints, the edits) for a database at `heads`, read-only."""
    applied = applied_revisions(script, heads)
    records = read_records(connection)
    if records is None:
        return True, "checksums: none recorded yet (the next upgrade records them)", []
    edits = find_edits(applied, records)
    if edits:
        names = ", ".join(edit.now.revision for edit in edits)
        return False, f"checksums: edited after they were applied: {names}", edits
    known = sum(revision.revision in records for revision in applied)
    return True, f"checksums: {plural(known, 'applied revision')} unchanged", []


def accept_edit(
    session: Session,
    connection: Connection,
    script: ScriptDirectory,
    heads: tuple[str, ...],
    revision_id: str,
    reason: str,
) -> None:
    """`repair -r REV --accept-edit --reason ...`: record REV's new fingerprint after review."""
    if not reason.strip():
        raise UsageError("--accept-edit needs --reason: why the edited revision is accepted")
    revision = _one_revision(script, revision_id)
    name = session.environment.name
    applied = {item.revision for item in applied_revisions(script, heads)}
    if revision.revision not in applied:
        raise UsageError(
            f"{name}: revision {revision.revision} is not applied here (nothing to accept)"
        )
    records = read_records(connection) or {}
    edits = find_edits([revision], records)
    now = fingerprint(revision)
    if not edits and revision.revision in records:
        session.console.line(
            f"{name}: revision {revision.revision} matches its recorded checksum; nothing to accept"
        )
        return
    for edit in edits:
        session.console.line(f"accepting the edit of {revision.revision} ({edit.when()}):")
        for line in edit.diff():
            session.console.line(f"    {line}")
    ensure_table(connection)
    previous = records.get(revision.revision)
    who = session.record.operator or session.record.user
    table = checksum_table()
    connection.execute(table.delete().where(table.c.revision == revision.revision))
    connection.execute(
        table.insert().values(
            revision=now.revision,
            checksum=now.checksum,
            source=now.text,
            applied_at=previous.applied_at if previous else None,
            applied_by=previous.applied_by if previous else None,
            host=session.record.host,
            recorded_at=datetime.now(UTC),
            note=f"edit accepted by {who}: {reason.strip()}",
        )
    )
    connection.commit()
    session.record.details["accepted_edit"] = {"revision": now.revision, "reason": reason.strip()}
    session.console.line(
        f"{name}: recorded the new checksum of {now.revision} (reason: {reason.strip()})"
    )


def _one_revision(script: ScriptDirectory, revision_id: str) -> Script:
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    text = revision_id.strip()
    if not text:
        raise UsageError("repair needs --rev: the revision whose edit to accept")
    try:
        revision = script.get_revision(text)
    except (CommandError, RevisionError) as error:
        raise UsageError(f"revision {text!r}: {str(error).splitlines()[0]}") from None
    if revision is None:
        raise UsageError(f"revision {text!r}: not a revision of the scripts")
    return revision


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
