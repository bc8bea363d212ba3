"""The revision scripts: the ScriptDirectory a run reads once, Alembic's planner over it, and
the checks a revision argument passes before anything is asked or touched.

Every function here reads scripts only (no database): a revision argument is validated against
them first, so a typo never reaches a prompt or a database. The display helpers (ids, paths,
a revision's doc) are the ones every command prints with.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tasks.core import suggestions
from tasks.core.alembic_config import alembic_config
from tasks.core.alembic_internals import planned_downgrade, planned_upgrade
from tasks.core.errors import ConfigError, Refused, UsageError
from tasks.core.redaction import redact
from tasks.core.session import Session

if TYPE_CHECKING:
    from alembic.runtime.migration import RevisionStep
    from alembic.script import ScriptDirectory

# What one of Alembic's revision resolvers returns items of (steps, or scripts).
Planned = TypeVar("Planned")


def script_directory(session: Session) -> ScriptDirectory:
    """The scripts of `migrations.alembic_ini`; an ini Alembic cannot use is exit 2, one line."""
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    if session._script is not None:  # read once per run; a fleet hands one to every target
        return session._script
    try:
        session._script = ScriptDirectory.from_config(alembic_config(session.settings))
        return session._script
    except (CommandError, RevisionError) as error:
        ini = session.settings.alembic_ini.name
        raise ConfigError(f"{ini} (migrations.alembic_ini): {redact(first_line(error))}") from None


# Longer than any id, label or range a person types: refused before Alembic parses it.
MAX_REVISION_ARGUMENT = 256


def require_short(revision: str) -> None:
    if len(revision) > MAX_REVISION_ARGUMENT:  # an id, a label, heads, a:b, -1, base@+2 ...
        raise UsageError(
            f"a revision argument of {len(revision)} characters: ids, labels and relative steps "
            f"are at most {MAX_REVISION_ARGUMENT}"
        )


def pending_plan(planner: Callable[[], list[Planned]], revision: str) -> list[Planned]:
    """What `planner` (one of Alembic's revision resolvers) returns for `revision`, with its
    errors turned into one-line UsageErrors; `revision` is refused first when absurdly long."""
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    require_short(revision)
    try:
        return planner()
    except (CommandError, RevisionError) as error:
        raise UsageError(f"revision {revision!r}: {first_line(error)}") from None
    except AssertionError:  # Alembic's RevisionMap asserts on a relative step past the graph
        raise UsageError(
            f"revision {revision!r}: no such revision (a relative step past base or head?)"
        ) from None


def validate_revision(script: ScriptDirectory, revision: str) -> None:
    pending_plan(lambda: list(script.get_revisions(revision)), revision)


def upgrade_steps(
    script: ScriptDirectory, revision: str, heads: tuple[str, ...]
) -> list[RevisionStep]:
    """What `alembic upgrade` would run (Alembic's own planner, not a re-implementation)."""
    return pending_plan(lambda: planned_upgrade(script, revision, heads), revision)


def downgrade_steps(
    script: ScriptDirectory, revision: str, heads: tuple[str, ...]
) -> list[RevisionStep]:
    if revision.startswith("-") and len(heads) > 1:
        # Alembic would revert whichever head it lists first (and warns that it will refuse).
        raise UsageError(
            f"revision {revision!r} is ambiguous: the database is at {len(heads)} heads "
            f"({revision_ids(heads)}); name the revision to go down to"
        )
    return pending_plan(lambda: planned_downgrade(script, revision, heads), revision)


def steps_towards(
    script: ScriptDirectory, revision: str, heads: tuple[str, ...]
) -> tuple[str, list[RevisionStep]]:
    """("upgrade", steps) when `revision` is ahead of the database, else ("downgrade", steps)."""
    if revision.startswith("-") or (revision == "base" and heads):
        return "downgrade", downgrade_steps(script, revision, heads)
    try:
        steps = upgrade_steps(script, revision, heads)
    except UsageError as upgrade_error:
        try:
            return "downgrade", downgrade_steps(script, revision, heads)
        except UsageError:
            raise upgrade_error from None
    if not steps and heads:  # at the target already, or below it: then it is a downgrade
        try:
            reverts = downgrade_steps(script, revision, heads)
        except UsageError:
            reverts = []
        if reverts:
            return "downgrade", reverts
    return "upgrade", steps


def unknown_heads(script: ScriptDirectory, heads: tuple[str, ...]) -> list[str]:
    return [head for head in heads if not is_known(script, head)]


def require_known(session: Session, script: ScriptDirectory, heads: tuple[str, ...]) -> None:
    """Nothing can be planned from a revision the scripts lack; say so instead of blaming --rev."""
    unknown = unknown_heads(script, heads)
    if unknown:
        raise Refused(
            f"{session.environment.name} database is at {revision_ids(unknown)}, which the "
            "scripts do not know (a revision file missing from this checkout?); update the "
            "checkout, or stamp a known revision"
        )


def is_known(script: ScriptDirectory, revision: str) -> bool:
    """Whether the scripts have `revision` (ScriptDirectory raises CommandError when not)."""
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        return script.get_revision(revision) is not None
    except (CommandError, RevisionError):
        return False


_REV_ID = re.compile(r"[0-9A-Za-z_]+")


_BRANCH_LABEL = re.compile(r"[A-Za-z_][0-9A-Za-z_]*")


_RESERVED_LABELS = frozenset({"head", "heads", "base"})


def validate_new_rev_id(script: ScriptDirectory, rev_id: str) -> None:
    """A revision id that Alembic's relative syntax and file names can both carry, unused."""
    if not _REV_ID.fullmatch(rev_id):
        raise UsageError(f"--rev-id {rev_id!r}: use letters, digits and underscores only")
    if rev_id in _RESERVED_LABELS:
        raise UsageError(f"--rev-id {rev_id!r}: head, heads and base are Alembic's own names")
    if is_known(script, rev_id):
        raise UsageError(f"--rev-id {rev_id!r}: a revision with that id exists already")


def validate_branch_label(script: ScriptDirectory, label: str) -> None:
    if not _BRANCH_LABEL.fullmatch(label) or label in _RESERVED_LABELS:
        raise UsageError(
            f"--branch-label {label!r}: a name of letters, digits and underscores "
            "(not head, heads or base)"
        )
    if is_known(script, label):
        raise UsageError(f"--branch-label {label!r}: that name is taken already")


def display_path(session: Session, path: Path) -> str:
    """Relative to the project when inside it; the scripts may live elsewhere (alembic_ini)."""
    try:
        return str(path.resolve().relative_to(session.settings.root))
    except ValueError:
        return str(path)


def merge_command(session: Session) -> str:
    """The task that merges heads in this collection (dev: `invoke dev.merge -m MESSAGE`);
    collections that cannot write revisions (staging, prod, fleet) point to dev's."""
    collection = suggestions.collection_of(session.record.task)
    return suggestions.command(collection, "merge", "-m MESSAGE") or str(
        suggestions.command("dev", "merge", "-m MESSAGE")
    )


def revision_ids(revisions: Any) -> str:
    return ", ".join(sorted(revisions))


def revision_doc(script: ScriptDirectory, revision: str) -> str:
    if not is_known(script, revision):
        return "(unknown to the scripts in alembic/versions)"
    found = script.get_revision(revision)
    return f"- {found.doc}" if found is not None and found.doc else ""


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
