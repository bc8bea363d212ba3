"""Alembic's weekly verbs for a lead: show, branches, merge, edit; and reading without a database.

Reading the revision history needs the scripts, not a database: a reviewer without credentials
runs `history`, `heads`, `show` and `branches` with no URL set. When the environment's URL is
set, the database's revision is marked as well (`current`); a SQLite file that does not exist
is read as "no revision", never created by a read.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import ConfigError, MigrationsError, UsageError
from tasks.core.session import Session
from tasks.migrate.alembic_run import database_heads, run_alembic
from tasks.migrate.scripts import (
    display_path,
    merge_command,
    pending_plan,
    revision_ids,
    script_directory,
    upgrade_steps,
    validate_new_rev_id,
)
from tasks.migrate.writer import skip_missing_hook_modules, template_fallback

if TYPE_CHECKING:
    from alembic.script import Script, ScriptDirectory

    from tasks.core.environments import Environment

# Dialects `show --dialect` renders for when no database URL says which one.
OFFLINE_DIALECTS = {
    "postgresql": "postgresql+psycopg2://",
    "mysql": "mysql+pymysql://",
    "mariadb": "mariadb+pymysql://",
    "sqlite": "sqlite://",
}
DEFAULT_OFFLINE_DIALECT = "postgresql"


# --- the database's revision, when there is a database to ask ----------------------------------


def database_configured(session: Session) -> bool:
    """Whether the environment has a URL (a variable, a `.env` file or a default)."""
    return session.names_a_database


def current_if_configured(session: Session) -> tuple[str, ...] | None:
    """The database's revision(s), or None when there is none to read (reading needs no
    database): no URL (said on a terminal), or a database that cannot be reached (a warning:
    the history is still worth printing). A malformed URL stays an error (bad input).
    """
    from tasks.core.errors import DatabaseError

    if not database_configured(session):
        note_unmarked(session)
        return None
    environment = session.environment
    if environment.dialect == "sqlite" and not _sqlite_file_exists(environment):
        session.record.revision_before = []
        return ()
    try:
        with session.connect() as connection:
            return database_heads(connection, session)
    except DatabaseError as error:
        session.console.warning(f"current revision not marked: {error}")
        return None


def _sqlite_file_exists(environment: Environment) -> bool:
    database = environment.url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return True
    return Path(database).exists()


def note_unmarked(session: Session) -> None:
    """Say on stderr (not in the piped output) why no revision is marked current."""
    from tasks.core.settings import Settings

    settings: Settings = session.settings
    variable = settings.environment(session.record.environment).url_variable
    session.console.note(f"{variable} is not set: the database's revision is not marked")


# --- show ------------------------------------------------------------------------------------


def show(session: Session, revision: str, *, dialect: str = "") -> Script:
    """A revision's header, its docstring, and the upgrade SQL for the environment's dialect."""
    if not revision.strip():
        raise UsageError("show needs --rev REV (an id, a unique prefix, head or a relative rev)")
    script = script_directory(session)
    found = _one_revision(script, revision.strip())
    current = current_if_configured(session)
    heads = set(script.get_heads())
    console = session.console
    path = display_path(session, Path(found.path))
    from tasks.core.console import one_value

    for label, value in _header(found, heads, current or (), path):
        console.line(f"{label + ':':<14}{one_value(value)}")  # a newline in data forges no row
    doc = (found.module.__doc__ or "").strip() if found.module else ""
    if doc:
        console.line("")
        for line in doc.splitlines():
            console.line(f"    {line}".rstrip())
    name, sql = _upgrade_sql(session, script, found, dialect)
    console.line("")
    console.line(f"-- upgrade SQL ({name}):")
    if not dialect and not database_configured(session):
        console.line(f"-- (no database URL: rendered for {name}; --dialect chooses another)")
    for line in sql.rstrip().splitlines():
        console.line(line)
    return found


def _one_revision(script: ScriptDirectory, revision: str) -> Script:
    if revision.startswith(("+", "-")):  # relative to the database's revision, which show has not
        raise UsageError(
            f"revision {revision!r} is relative to a database's revision: show takes an id, a "
            "unique prefix, head, or a step from head (head-1)"
        )
    relative = _RELATIVE.fullmatch(revision)
    if relative and not _known_name(script, revision):
        try:
            return _step(script, relative["anchor"], relative["sign"], int(relative["count"]))
        except UsageError as error:
            raise UsageError(f"revision {revision!r}: {error}") from None
    found = pending_plan(lambda: list(script.get_revisions(revision)), revision)
    if any(not hasattr(item, "revision") for item in found if item is not None):
        raise UsageError(f"revision {revision!r} does not name one revision of the scripts")
    if len(found) != 1 or found[0] is None:
        names = ", ".join(item.revision for item in found if item is not None) or "none"
        raise UsageError(f"revision {revision!r} names {len(found)} revisions ({names}); name one")
    return found[0]


# `head-1`, `head~2`, `ae1027a6acf-1`, `base+1`: a step along the graph from a named revision.
_RELATIVE = re.compile(r"(?P<anchor>[\w@]+?)(?P<sign>[-+~])(?P<count>\d+)")


def _known_name(script: ScriptDirectory, revision: str) -> bool:
    """A branch label or id that merely looks relative (`feature-2`) is taken as itself."""
    try:
        return bool(script.get_revisions(revision))
    except Exception:
        return False


def _step(script: ScriptDirectory, anchor: str, sign: str, count: int) -> Script:
    """Walk `count` steps down (`-`, `~`) or up (`+`) from `anchor`; a merge or branch point
    on the way has two ways to go, so it is refused with both named."""
    if anchor == "base":
        if sign != "+":
            raise UsageError("nothing lies below base: use base+N")
        roots = [item for item in script.walk_revisions() if not item.down_revision]
        found = _only(roots, f"base+{count}", "roots")
        count -= 1
    else:
        found = _one_revision(script, anchor)
    for _ in range(count):
        if sign == "+":
            children = [script.get_revision(name) for name in sorted(found.nextrev)]
            found = _only(children, f"{found.revision}+1", "children")
        else:
            parents = [script.get_revision(name) for name in _as_tuple(found.down_revision)]
            found = _only(parents, f"{found.revision}-1", "parents")
    return found


def _only(candidates: list[Any], asked: str, what: str) -> Any:
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UsageError(f"no step {asked} (past head or base)")
    names = ", ".join(item.revision for item in candidates)
    raise UsageError(f"step {asked} goes two ways ({what} {names}): name one")


def _header(
    found: Script, heads: set[str], current: tuple[str, ...], path: str
) -> list[tuple[str, str]]:
    parents = _as_tuple(found.down_revision)
    tags = [
        tag
        for tag, present in (
            ("head", found.revision in heads),
            ("current", found.revision in current),
            ("branchpoint", found.is_branch_point),
            ("mergepoint", found.is_merge_point),
        )
        if present
    ]
    rows = [
        ("Revision ID", found.revision + (f" ({', '.join(tags)})" if tags else "")),
        ("Revises", ", ".join(parents) or "<base>"),
        ("Message", found.doc or ""),
        ("Path", path),
    ]
    if found.branch_labels:
        rows.append(("Branch names", ", ".join(sorted(found.branch_labels))))
    if found.dependencies:
        rows.append(("Depends on", ", ".join(_as_tuple(found.dependencies))))
    if found.nextrev:
        rows.append(("Revised by", ", ".join(sorted(found.nextrev))))
    return rows


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _upgrade_sql(
    session: Session, script: ScriptDirectory, found: Script, dialect: str
) -> tuple[str, str]:
    """Render exactly this revision's upgrade step offline, for the right dialect."""
    from tasks.plan.steps import render_step_sql

    environment = _rendering_environment(session, dialect)
    steps = upgrade_steps(script, found.revision, _as_tuple(found.down_revision))
    step = next(s for s in steps if s.revision.revision == found.revision)
    rendering = Session(session.settings, session.record, session.confirmer, session.console)
    rendering._environment = environment
    rendering._metadata = session._metadata
    try:
        sql = render_step_sql(rendering, script, step)
    except MigrationsError:
        raise
    except Exception as error:  # a revision that reads the database (alembic #740)
        reason = " ".join(str(error).split()) or type(error).__name__
        sql = f"-- no offline SQL for this revision: {reason}"
    return environment.dialect, sql


def _rendering_environment(session: Session, dialect: str) -> Environment:
    """The environment's own database when its URL is set; otherwise (or with --dialect) a
    URL with the dialect alone, which is all Alembic's offline mode reads."""
    from sqlalchemy.engine import make_url

    from tasks.core.environments import Environment

    chosen = dialect.strip().lower()
    if chosen and chosen not in OFFLINE_DIALECTS:
        known = ", ".join(sorted(OFFLINE_DIALECTS))
        raise UsageError(f"--dialect must be one of {known}, not {dialect!r}")
    if not chosen and database_configured(session):
        return session.environment
    chosen = chosen or DEFAULT_OFFLINE_DIALECT
    name = session.record.environment
    return Environment(name, make_url(OFFLINE_DIALECTS[chosen]), "--dialect", "offline", False)


def offline_session(session: Session) -> Session:
    """The session `--sql` renders with: its own when a URL is set; otherwise one whose
    environment carries only a dialect (PostgreSQL), said in an SQL comment first, so a
    reviewer without credentials can still read the SQL."""
    if database_configured(session):
        return session
    environment = _rendering_environment(session, DEFAULT_OFFLINE_DIALECT)
    variable = session.settings.environment(session.record.environment).url_variable
    session.console.line(f"-- {variable} is not set: SQL rendered for {environment.dialect}")
    rendering = Session(session.settings, session.record, session.confirmer, session.console)
    rendering._environment = environment
    rendering._metadata = session._metadata
    return rendering


# --- branches --------------------------------------------------------------------------------


def branches(session: Session) -> list[str]:
    """Branch points (revisions with several children), each with its branches' heads."""
    script = script_directory(session)
    found = current_if_configured(session)
    current = found or ()
    heads = set(script.get_heads())
    points = [item for item in script.walk_revisions() if item.is_branch_point]
    if not points:
        session.console.line("no branch points: the history is a straight line")
    for point in points:
        session.console.line(_label(point, heads, current))
        for child in sorted(point.nextrev):
            session.console.line(f"  -> {_label(script.get_revision(child), heads, current)}")
    if len(heads) > 1:
        session.console.line(f"{len(heads)} heads: merge them with `{merge_command(session)}`")
    return [point.revision for point in points]


def _label(found: Script, heads: set[str], current: tuple[str, ...]) -> str:
    tags = [
        tag
        for tag, on in (("head", found.revision in heads), ("current", found.revision in current))
        if on
    ]
    marks = f" ({', '.join(tags)})" if tags else ""
    return f"{found.revision}{marks} {found.doc or ''}".rstrip()


# --- merge -----------------------------------------------------------------------------------


def merge(session: Session, message: str, *, rev_id: str = "") -> Path | None:
    """Write a merge revision joining the current heads (Alembic's `merge heads`)."""
    import io

    from alembic import command

    from tasks.core.alembic_config import alembic_config

    if not message.strip():
        raise UsageError("a merge needs a message: -m 'merge x and y'")
    script = script_directory(session)
    if rev_id.strip():
        validate_new_rev_id(script, rev_id.strip())
    heads = tuple(script.get_heads())
    if len(heads) < 2:  # nothing to do is not an error (exit 0, like an upgrade at head)
        session.console.line(f"nothing to merge: one head ({revision_ids(heads) or 'none'})")
        return None
    config = alembic_config(session.settings, stdout=io.StringIO())
    skip_missing_hook_modules(session, config)
    with template_fallback(session, script):
        created = run_alembic(
            session, command.merge, config, "heads", message=message,
            rev_id=rev_id.strip() or None,
        )  # fmt: skip
    path = Path(created.path)
    session.record.details["revision_file"] = str(path)
    session.console.line(f"created {display_path(session, path)}: merges {revision_ids(heads)}")
    return path


# --- edit ------------------------------------------------------------------------------------


def edit(session: Session, revision: str) -> Path:
    """Open a revision's file in $EDITOR (VISUAL first, like git)."""
    if not revision.strip():
        raise UsageError("edit needs --rev REV (an id, a unique prefix or head)")
    found = _one_revision(script_directory(session), revision.strip())
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or ""
    if not editor.strip():
        raise ConfigError("set $EDITOR (or $VISUAL) to the editor that opens revision files")
    path = Path(found.path)
    try:
        words = shlex.split(editor)
    except ValueError as error:  # "No closing quotation": the variable, not the task, is wrong
        raise ConfigError(f"$EDITOR/$VISUAL cannot be read as a command ({error})") from None
    command = [*words, str(path)]
    try:
        completed = subprocess.run(command, check=False)
    except OSError as error:
        raise ConfigError(f"cannot start the editor {command[0]!r}: {error.strerror}") from None
    if completed.returncode != 0:
        raise UsageError(f"the editor {command[0]!r} exited with status {completed.returncode}")
    session.record.details["revision_file"] = str(path)
    return path
