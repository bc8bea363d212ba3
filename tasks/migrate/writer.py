"""Writing a revision: Alembic's `revision` command (autogenerate included), then the proofs
that the new file will run.

A written file is proved before it is reported: its message is plain data in the docstring,
every name it uses resolves, and its SQL renders for the environment's dialect (SQLite: it runs
on a copy). A file that fails a proof is removed again, and the error says what to fix.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.alembic_config import alembic_config
from tasks.core.environments import url_is_set
from tasks.core.errors import ConfigError, MigrationsError, Refused, UsageError
from tasks.core.session import Session
from tasks.migrate.alembic_run import database_heads, handover_for, run_alembic
from tasks.migrate.scripts import (
    display_path,
    merge_command,
    pending_plan,
    require_known,
    revision_ids,
    script_directory,
    validate_branch_label,
    validate_new_rev_id,
    validate_revision,
)
from tasks.plan.steps import rehearse
from tasks.schema import drift

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory


@dataclass(frozen=True)
class RevisionOptions:
    """Alembic's `revision` flags beyond -m and --autogenerate (issue 12.1)."""

    head: str = "head"
    splice: bool = False
    branch_label: str = ""
    depends_on: str = ""
    rev_id: str = ""
    empty: bool = False

    def customised(self) -> bool:
        return self != RevisionOptions()

    def alembic_kwargs(self) -> dict[str, Any]:
        depends = [item.strip() for item in self.depends_on.split(",") if item.strip()]
        labels = [item.strip() for item in self.branch_label.split(",") if item.strip()]
        return {
            "head": self.head.strip() or "head",
            "splice": self.splice,
            "branch_label": labels or None,
            "depends_on": depends or None,
            "rev_id": self.rev_id.strip() or None,
        }


def revision(
    session: Session,
    message: str,
    *,
    autogenerate: bool = False,
    options: RevisionOptions | None = None,
    from_database: bool = False,
) -> Path | None:
    """Write a new revision file; with autogenerate, from the models' differences.

    Autogenerate compares the models with the history itself, built in a throwaway database
    (`tasks.ci.history_database`): no live database is needed, and none's drift leaks in.
    `from_database` compares with the environment's database instead, and then refuses unless
    it is at the head it builds on (a lagging one writes pending changes a second time).
    `options` carries Alembic's own flags (--head, --splice, --branch-label, --depends-on,
    --rev-id, --empty); an empty revision needs no database at all. Whatever the flags, the
    written file is proved the same way: the message is data, every name resolves, and its SQL
    renders.
    """
    if not message.strip():
        raise UsageError("a revision needs a message: -m 'what it changes'")
    options = options or RevisionOptions()
    if options.empty and autogenerate:
        raise UsageError("--empty and --autogenerate contradict each other: choose one")
    script = script_directory(session)
    kwargs = _validated_revision_options(script, options)
    if not options.customised():
        script_heads = tuple(script.get_heads())
        if len(script_heads) > 1:
            raise UsageError(
                f"several heads {revision_ids(script_heads)}: merge them first "
                f"({merge_command(session)}), or name one with --head"
            )
    if options.empty or not (autogenerate or from_database):
        config = alembic_config(session.settings, stdout=io.StringIO())
        created = _write_revision(session, script, config, message, **kwargs)
        return _report_created(session, created, message, [])
    base = kwargs["head"]
    if not from_database:
        return _revision_from_history(session, script, message, kwargs)
    wanted = {
        item.revision
        for item in pending_plan(lambda: list(script.get_revisions(base)), base)
        if item is not None
    }
    with session.connect() as connection:
        current_heads = database_heads(connection, session)
        connection.rollback()
        require_known(session, script, current_heads)
        at_base = (
            wanted <= set(current_heads)
            if options.customised()
            else (set(current_heads) == set(script.get_heads()))
        )
        if not at_base:
            raise Refused(
                f"{session.environment.name} database is at "
                f"{revision_ids(current_heads) or 'base'}, "
                f"not at {base} ({revision_ids(wanted) or 'base'}); upgrade it first"
            )
        handover = handover_for(session, connection)
        handover.write_empty_revision = not autogenerate
        config = alembic_config(session.settings, handover, stdout=io.StringIO())
        config.attributes["safe_revisions"] = _safe_revisions_enabled(session)
        created = _write_revision(
            session, script, config, message, autogenerate=autogenerate, **kwargs
        )
        connection.rollback()
    return _report_created(session, created, message, handover.revision_directives)


def _revision_from_history(
    session: Session, script: ScriptDirectory, message: str, kwargs: dict[str, Any]
) -> Path | None:
    """Autogenerate against the history at `--head`, built in a throwaway database."""
    from tasks.ci.history_database import history_database

    with history_database(session, kwargs["head"]) as (built, connection):
        handover = handover_for(built, connection)
        handover.write_empty_revision = False
        config = alembic_config(session.settings, handover, stdout=io.StringIO())
        config.attributes["safe_revisions"] = _safe_revisions_enabled(session)
        created = _write_revision(built, script, config, message, autogenerate=True, **kwargs)
        connection.rollback()
        return _report_created(
            built, created, message, handover.revision_directives, against="the history"
        )


def _validated_revision_options(script: ScriptDirectory, options: RevisionOptions) -> dict:
    """Alembic's keyword arguments, each checked against the scripts before anything is written."""
    kwargs = options.alembic_kwargs()
    for dependency in kwargs["depends_on"] or ():
        validate_revision(script, dependency)
    for label in kwargs["branch_label"] or ():
        validate_branch_label(script, label)
    if kwargs["rev_id"]:
        validate_new_rev_id(script, kwargs["rev_id"])
    return kwargs


def _write_revision(
    session: Session, script: ScriptDirectory, config: Config, message: str, **kwargs: Any
) -> Any:
    """Alembic's `revision` command; a file it wrote but cannot load is removed again."""
    from alembic import command

    skip_missing_hook_modules(session, config)
    written_before = _revision_files(script)
    try:
        # Alembic prints "Running post write hook ..." on sys.stdout whatever `quiet` says.
        with contextlib.redirect_stdout(io.StringIO()), template_fallback(session, script):
            return run_alembic(session, command.revision, config, message=message, **kwargs)
    except MigrationsError as error:  # Alembic loads what it wrote: a broken file fails here
        _remove_unloadable(session, _revision_files(script) - written_before, message, error)
        raise


@contextlib.contextmanager
def template_fallback(session: Session, script: ScriptDirectory) -> Iterator[None]:
    """A script directory without script.py.mako (an application's wheel ships only env.py and
    versions/) gets its revisions from Alembic's generic template, said once per write; a
    script.py.mako put there is used instead."""
    from tasks.core.alembic_internals import revision_template_fallback

    with revision_template_fallback(script.dir) as applies:
        if applies:
            session.console.line(
                f"{display_path(session, Path(script.dir))} has no script.py.mako: "
                "Alembic's generic template is used (put your own there to change it)"
            )
        yield


def _report_created(
    session: Session,
    created: Any,
    message: str,
    directives: list[Any],
    *,
    against: str = "the database",
) -> Path | None:
    """The new file, proved (message as data, names resolve, SQL renders), then reported."""
    scripts = created if isinstance(created, list) else [created]
    scripts = [item for item in scripts if item is not None]
    if not scripts:
        session.console.line(f"no changes between the models and {against}: no revision written")
        return None
    path = Path(scripts[0].path)
    _require_message_as_data(path, message)
    session.record.details["revision_file"] = str(path)
    for written in scripts:  # an expand/contract change writes two: expand, then contract
        _prove_revision(session, written)
    for written in scripts:
        session.console.line(f"created {display_path(session, Path(written.path))}")
    if len(scripts) > 1:
        session.record.details["revision_files"] = [str(item.path) for item in scripts]
    _report_operations(session, directives[:1])
    return path


def _safe_revisions_enabled(session: Session) -> bool:
    """`migrations.safe_revisions`: lock-safe autogenerate on PostgreSQL (tasks/safe_revisions)."""
    from tasks.migrate.safe_revisions import enabled

    return enabled(session.settings.extra)


def _remove_unloadable(
    session: Session, written: set[Path], message: str, error: MigrationsError
) -> None:
    """A revision Alembic wrote but cannot load (a type's module that does not import, a
    template that broke the file) would fail every later task: it is removed, and said so."""
    for path in sorted(written):
        _require_message_as_data(path, message)
    if not written:
        return
    for path in written:
        path.unlink(missing_ok=True)
    shown = ", ".join(display_path(session, path) for path in sorted(written))
    raise ConfigError(f"the new revision could not be loaded ({error}); {shown} was removed")


def skip_missing_hook_modules(session: Session, config: Config) -> None:
    """A post-write hook whose module is not installed is skipped, with one notice per machine.

    Alembic raises after the file is written, leaving a revision the task never reported (and
    `merge` exited 2 with the file left behind); a formatter missing from a machine (ruff comes
    with requirements-dev.txt) is not worth that, nor worth a warning on every run.
    """
    import importlib.util

    section = "post_write_hooks"
    ini = config.file_config
    if not ini.has_section(section):
        return
    names = [name.strip() for name in ini.get(section, "hooks", fallback="").split(",")]
    kept = []
    for name in filter(None, names):
        module = ini.get(section, f"{name}.module", fallback="")
        if ini.get(section, f"{name}.type", fallback="") == "module" and module:
            try:
                missing = importlib.util.find_spec(module) is None
            except (ImportError, ValueError):
                missing = True
            if missing:
                _notice_once(
                    session,
                    f"post-write hook {name} skipped: module {module!r} is not installed "
                    "(shown once; `pip install -r requirements-dev.txt` formats new revisions)",
                )
                continue
        kept.append(name)
    ini.set(section, "hooks", ", ".join(kept))


def _notice_once(session: Session, text: str) -> None:
    """A warning shown the first time only: a marker beside the run log remembers it."""
    import hashlib

    marker = session.settings.log_file.parent / (
        ".notice-" + hashlib.sha256(text.encode()).hexdigest()[:16]
    )
    if marker.exists():
        return
    session.console.warning(text)
    with contextlib.suppress(OSError):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def _prove_revision(session: Session, written: Any) -> None:
    """A new revision must run: every name it uses resolves, and it renders SQL offline.

    Autogenerate renders a custom type as `myapp.types.EncryptedString(...)` and imports
    nothing, so the file fails only later, in `upgrade`, with a line-less NameError. A file that
    fails either proof is removed, and the error says what to fix.
    """
    from alembic import command

    path = Path(written.path)
    shown = display_path(session, path)
    source = path.read_text(encoding="utf-8")
    missing = unresolved_names(source, str(path))
    if missing:
        path.unlink(missing_ok=True)
        name, usage = missing[0]
        raise ConfigError(
            f"the new revision uses {usage} without importing {name!r}, so it could not run; "
            f"{shown} was removed: import the type's module in script.py.mako, or render it "
            "with user_module_prefix or render_item in env.py"
        )
    if session._environment is None and not url_is_set(
        session.settings, session.record.environment
    ):
        return  # an empty revision written without a database: nothing to render it for
    down = written.down_revision
    start = down if isinstance(down, str) else ",".join(down or ()) or "base"
    config = alembic_config(
        session.settings,
        handover_for(session, None),
        stdout=io.StringIO(),
        sql_output=io.StringIO(),
    )
    try:
        if session.environment.dialect == "sqlite":
            _rehearse_revision(session, written.revision)
        else:
            run_alembic(session, command.upgrade, config, f"{start}:{written.revision}", sql=True)
    except Exception as error:
        path.unlink(missing_ok=True)
        how = "run on a copy of" if session.environment.dialect == "sqlite" else "render SQL for"
        raise ConfigError(
            f"the new revision does not {how} {session.environment.dialect} "
            f"({' '.join(str(error).split())[:300]}); {shown} was removed"
        ) from None


def _rehearse_revision(session: Session, revision_id: str) -> None:
    """SQLite: batch mode reflects the tables it rebuilds, which offline mode cannot; run the
    new revision on a copy of the database (at head, so only it runs) instead."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="migrations-revision-") as directory:
        rehearse(session, "upgrade", revision_id, f"{directory}/copy.sqlite3")


def unresolved_names(source: str, filename: str) -> list[tuple[str, str]]:
    """Names a module uses but neither defines, imports nor gets from builtins, with the first
    expression using each (`myapp.types.EncryptedString(length=1000)`).

    Python's own symbol tables answer this exactly, without running the file: a name a function
    reads but does not bind is global there, and must then be bound at module level.
    """
    import builtins
    import symtable

    try:
        module = symtable.symtable(source, filename, "exec")
    except SyntaxError as error:
        return [("(syntax)", f"invalid syntax at line {error.lineno}")]
    defined = {
        symbol.get_name()
        for symbol in module.get_symbols()
        if symbol.is_assigned() or symbol.is_imported() or symbol.is_namespace()
    }
    known = defined | set(dir(builtins)) | {"__file__", "__name__", "__doc__"}
    used: list[str] = []
    tables = [module]
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        for symbol in table.get_symbols():
            global_here = table is module or symbol.is_global()
            if symbol.is_referenced() and global_here and symbol.get_name() not in known:
                used.append(symbol.get_name())
    found: list[tuple[str, str]] = []
    for name in dict.fromkeys(used):
        match = re.search(rf"\b{re.escape(name)}(?:\.\w+)*(?:\([^()\n]*\))?", source)
        found.append((name, f"`{match.group(0)}`" if match else f"`{name}`"))
    return found


def _revision_files(script: ScriptDirectory) -> set[Path]:
    """The revision files on disk, to tell which one a failed `revision` call left behind."""
    folders = {script.versions, *(script.version_locations or [])}
    return {path for folder in folders for path in Path(folder).glob("*.py")}


def _require_message_as_data(path: Path, message: str) -> None:
    """Remove a just-written revision whose message is not plain data in its docstring.

    Every task imports every revision file: a message that ended the docstring (three double
    quotes) broke them all with a SyntaxError, and a crafted one ran code in each task,
    `prod.current` included.
    The project's script.py.mako escapes the message; this check also holds a team's own
    template to it, and fails closed: a file it cannot read back the message from is deleted.
    """
    import ast

    try:
        docstring = ast.get_docstring(ast.parse(path.read_bytes(), str(path)), clean=False)
    except (SyntaxError, ValueError, OSError):
        docstring = None
    if docstring is None or message not in docstring:
        path.unlink(missing_ok=True)
        raise UsageError(
            "the revision template does not keep this message as plain text in the docstring "
            "(quotes, backslashes or line breaks break the file); no revision written"
        )


def _report_operations(session: Session, directives: list[Any]) -> None:
    """One line per operation in the new revision; drops are shouted about."""
    drops: list[str] = []
    for directive in directives:
        upgrade_ops = getattr(directive, "upgrade_ops", None)
        if upgrade_ops is None:
            continue
        for difference in drift.flatten(upgrade_ops.as_diffs()):
            line = drift.describe(difference)
            session.console.line(f"  {line}")
            if difference[0] in drift.DESTRUCTIVE_KINDS:
                drops.append(line)
    if drops:
        session.record.details["drops"] = drops
        session.console.warning(
            "THIS REVISION DROPS " + "; ".join(drops) + ". If a model was not imported by "
            f"migrations.metadata ({session.settings.metadata}), delete the file instead of "
            "applying it."
        )
