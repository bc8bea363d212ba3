"""`invoke dev.squash -r REV`: every revision from the root up to REV becomes one baseline.

1. The range is REV and everything it depends on. Revisions outside it that hang off a revision
   inside it other than REV (a branch, a `depends_on`) would lose their parent: refused.
2. Databases it can reach that are behind REV would be stranded: refused, naming them, unless
   `--force` (then the baseline's docstring names them).
3. Per dialect of `ci.dialects`: a throwaway database is upgraded to REV through the old chain, its
   schema read back and rendered (`baseline.py`); a second throwaway database is built from the
   baseline alone and compared with the first (`snapshot.py`), then downgraded to base, which
   must leave nothing. Any difference: nothing is written, and the differences are printed.
4. Written (unless `--dry-run`): the baseline as REV's id, the old files removed (git keeps them),
   `checksums.json` updated. Revisions after REV are untouched and keep working.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.console import plural
from tasks.core.errors import (
    ConfigError,
    DatabaseError,
    ExitCode,
    MigrationsError,
    Refused,
    UsageError,
)
from tasks.history.fingerprints import fingerprint

if TYPE_CHECKING:
    from alembic.script import Script, ScriptDirectory
    from sqlalchemy.engine import Connection

    from tasks.core.environments import Environment
    from tasks.core.session import Session


class SquashUnproven(MigrationsError):
    """The baseline does not rebuild the schema the old chain builds."""

    exit_code = ExitCode.SQUASH_UNPROVEN


def squash(
    session: Session, revision: str, *, dry_run: bool = False, force: bool = False
) -> dict[str, Any]:
    from tasks.migrate.commands import script_directory
    from tasks.squash import reach
    from tasks.squash.revision_file import data_migrations

    script = script_directory(session)
    target = _one_revision(script, revision)
    squashed = _range(script, target)
    if len(squashed) < 2:
        session.console.line(f"revision {target.revision} is a root: nothing to squash")
        return {"revision": target.revision, "squashed": []}
    _refuse_orphans(script, target, squashed)
    ids = [item.revision for item in squashed]
    session.console.line(
        f"squashing {plural(len(ids), 'revision')} ({ids[0]} .. {target.revision}) into one "
        f"baseline {target.revision}"
    )
    stranded = reach.stranded(session, set(ids), target.revision)
    if stranded and not force:
        raise Refused(
            f"{plural(len(stranded), 'database')} behind {target.revision} would be stranded on "
            f"revisions the squash removes: {'; '.join(item.line() for item in stranded)}; "
            "upgrade them past it first (or --force)"
        )
    for item in stranded:
        session.console.warning(f"--force: {item.line()} is stranded by this squash")
    findings = data_migrations(squashed)
    text, dialects = _proven_baseline(session, script, target, squashed, findings, stranded)
    for finding in findings:
        session.console.line(f"  not replayed on fresh databases: {finding.line()}")
    new_path = Path(target.path).with_name(f"{target.revision}_squashed_baseline.py")
    result = {
        "revision": target.revision,
        "squashed": ids,
        "dialects": dialects,
        "file": str(new_path),
        "data_migrations": [finding.line() for finding in findings],
        "stranded": [item.line() for item in stranded],
    }
    session.record.details["squash"] = {**result, "dry_run": dry_run}
    if dry_run:
        session.console.line(
            f"--dry-run: proven on {', '.join(dialects)}; would write {new_path.name} and remove "
            f"{plural(len(ids), 'file')}; nothing written"
        )
        return result
    _write(script, squashed, new_path, text)
    session.console.line(
        f"wrote {new_path.name} (proven on {', '.join(dialects)}); removed "
        f"{plural(len(ids), 'revision file')} (git keeps them)"
    )
    return result


# --- the range ------------------------------------------------------------------------------


def _one_revision(script: ScriptDirectory, revision: str) -> Script:
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    text = revision.strip()
    if not text:
        raise UsageError("squash needs --rev: the last revision of the range to squash")
    try:
        found = script.get_revision(text)
    except (CommandError, RevisionError) as error:
        raise UsageError(f"revision {text!r}: {str(error).splitlines()[0]}") from None
    if found is None:
        raise UsageError(f"revision {text!r}: not a single revision of the scripts")
    return found


def _range(script: ScriptDirectory, target: Script) -> list[Script]:
    """`target` and every revision it needs, base first."""
    found = [item for item in script.iterate_revisions(target.revision, "base") if item]
    return list(reversed(found))


def _refuse_orphans(script: ScriptDirectory, target: Script, squashed: list[Script]) -> None:
    """A revision outside the range whose parent or dependency inside it is not `target`."""
    inside = {item.revision for item in squashed} - {target.revision}
    for item in script.walk_revisions():
        if item.revision in inside or item.revision == target.revision:
            continue
        needs = set(_ids(item.down_revision)) | set(_ids(item.dependencies))
        lost = sorted(needs & inside)
        if lost:
            raise UsageError(
                f"revision {item.revision} builds on {', '.join(lost)}, inside the squashed range "
                f"but not {target.revision}: squash up to a revision every later one builds on"
            )


def _ids(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


# --- build and prove ------------------------------------------------------------------------


def _proven_baseline(
    session: Session,
    script: ScriptDirectory,
    target: Script,
    squashed: list[Script],
    findings: list[Any],
    stranded: list[Any],
) -> tuple[str, list[str]]:
    """The baseline's source, proven on every dialect; SquashUnproven when it is not."""
    from alembic import command

    from tasks.ci.checks import ci_options, dialects_to_check, throwaway_database
    from tasks.squash.baseline import schema_statements
    from tasks.squash.revision_file import render
    from tasks.squash.snapshot import snapshot

    options = ci_options(session)
    backends, notes = dialects_to_check(session, options)
    for note in notes:
        session.console.line(f"  note: {note}")
    if not backends:
        raise ConfigError("no dialect to build the history on; set migrations.ci.dialects")
    expected, schemas = {}, []
    for backend in backends:
        with throwaway_database(session, backend, options) as (environment, connection):
            try:
                _run(session, environment, connection, command.upgrade, target.revision)
            except Exception as error:
                raise DatabaseError(
                    f"{backend}: the chain does not build up to {target.revision} on a throwaway "
                    f"database: {_first_line(error)}"
                ) from None
            expected[backend] = snapshot(connection)
            schemas.append(schema_statements(connection))
    text = render(
        target.revision,
        [item.revision for item in squashed],
        schemas,
        replaces_checksum=fingerprint(target).checksum,
        branch_labels=sorted({label for item in squashed for label in item.branch_labels}),
        findings=findings,
        forced=[item.line() for item in stranded],
    )
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="squash-") as directory:
        versions = Path(directory)
        (versions / f"{target.revision}_squashed_baseline.py").write_text(text, encoding="utf-8")
        for backend in backends:
            with throwaway_database(session, backend, options) as (environment, connection):
                problems += _prove(session, environment, connection, versions, target, expected)
    if problems:
        for line in problems:
            session.console.line(f"  {line}")
        session.record.details["squash_differences"] = problems
        raise SquashUnproven(
            f"the baseline does not rebuild what the chain builds "
            f"({plural(len(problems), 'difference')}; first: {problems[0]}); nothing written"
        )
    return text, backends


def _prove(
    session: Session,
    environment: Environment,
    connection: Connection,
    versions: Path,
    target: Script,
    expected: dict[str, Any],
) -> list[str]:
    from alembic import command

    from tasks.squash.snapshot import differences, snapshot

    backend = environment.dialect
    try:
        _run(session, environment, connection, command.upgrade, target.revision, versions)
    except Exception as error:
        return [f"{backend}: the baseline does not run: {_first_line(error)}"]
    found = [f"{backend}: {line}" for line in differences(expected[backend], snapshot(connection))]
    if found:
        return found
    try:
        _run(session, environment, connection, command.downgrade, "base", versions)
    except Exception as error:
        return [f"{backend}: the baseline's downgrade does not run: {_first_line(error)}"]
    left = snapshot(connection)
    leftovers = [
        f"{kind} {name}"
        for kind in ("tables", "views", "sequences", "enums", "functions", "triggers")
        for name in (left.get(kind) or {})
    ]
    if leftovers:
        return [f"{backend}: the baseline's downgrade leaves {', '.join(leftovers)} behind"]
    return []


def _run(
    session: Session,
    environment: Environment,
    connection: Connection,
    operation: Any,
    revision: str,
    versions: Path | None = None,
) -> None:
    """An Alembic command on the throwaway database, through the project's env.py; with
    `versions`, on the revisions of that folder only (the baseline alone)."""
    from tasks.core.alembic_config import alembic_config
    from tasks.core.handover import EnvHandover

    handover = EnvHandover(
        environment=environment,
        metadata_path=session.settings.metadata,
        connection=connection,
        metadata=session.metadata(),
    )
    config = alembic_config(session.settings, handover, stdout=io.StringIO())
    if versions is not None:
        config.set_main_option("version_locations", str(versions))
    try:
        operation(config, revision)
        connection.commit()
    except Exception:
        connection.rollback()
        raise


def _first_line(error: BaseException) -> str:
    from tasks.core.engines import describe_database_error

    return describe_database_error(error)


# --- writing --------------------------------------------------------------------------------


def _write(script: ScriptDirectory, squashed: list[Script], new_path: Path, text: str) -> None:
    """The baseline in, the old files out, the checksum file (if any) following."""
    from tasks.history import checksum_file

    committed = checksum_file.read_file(script)
    partial = new_path.with_name(new_path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    for item in squashed:
        Path(item.path).unlink(missing_ok=True)
        _drop_bytecode(Path(item.path))
    partial.replace(new_path)
    _format(new_path)
    if committed is not None:
        for item in squashed:
            committed.pop(item.revision, None)
        from alembic.script import ScriptDirectory

        fresh = ScriptDirectory(script.dir, version_locations=script.version_locations)
        baseline = fresh.get_revision(squashed[-1].revision)
        if baseline is not None:
            committed = {baseline.revision: fingerprint(baseline).checksum, **committed}
        checksum_file.write_file(script, committed)


def _drop_bytecode(path: Path) -> None:
    cache = path.parent / "__pycache__"
    for compiled in cache.glob(f"{path.stem}.*.pyc") if cache.is_dir() else []:
        compiled.unlink(missing_ok=True)


def _format(path: Path) -> None:
    """ruff format, when it is installed next to this Python (as for new revisions)."""
    ruff = Path(sys.executable).with_name("ruff")
    tool = str(ruff) if ruff.exists() else shutil.which("ruff")
    if tool:
        subprocess.run([tool, "format", "--quiet", str(path)], check=False, timeout=60)
