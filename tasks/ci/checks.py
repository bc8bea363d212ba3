"""`ci.check`: what a pipeline verifies on every change to the migrations.

Built on Alembic's own API (ScriptDirectory, command.upgrade/downgrade, compare_metadata)
rather than pytest-alembic, so the same checks run as a task, outside pytest, with the project's
env.py and configuration. Every check runs; each failure names its check and the revision.

- heads: exactly `ci.allowed_heads` heads, and the whole graph loads (no dangling down_revision);
- downgrades: every revision has a real downgrade (not `pass`, not NotImplementedError);
- stairway: for each revision in order, upgrade to it, down to each of its parents (a merge
  has two) and up again, that revision alone (other branches stay where they are), on a
  throwaway database of each of `ci.dialects` (catches downgrades that leave enum types,
  indexes or rows behind, and upgrades that cannot be re-run);
- models: the database built by the whole history matches the models;
- lint: each revision's upgrade SQL, classified and (on PostgreSQL) squawked, fails on the
  configured severities.

`ci.dialects` (default: the dialects of the shared environments' URLs) decides where the
stairway and models checks run, so a PostgreSQL-only history is not failed by SQLite.
`ci.since` marks inherited history as trusted: that revision and older ones skip the
downgrades, stairway and lint checks (they are only built, once); heads and models still cover
the whole history.
"""

from __future__ import annotations

import ast
import io
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core import env_comparison
from tasks.core.alembic_config import alembic_config
from tasks.core.alembic_internals import planned_upgrade
from tasks.core.console import plural
from tasks.core.database_identity import identity
from tasks.core.errors import CheckFailed, ConfigError, DatabaseError, ExitCode
from tasks.core.handover import EnvHandover
from tasks.core.session import Session
from tasks.schema import drift

if TYPE_CHECKING:
    from alembic.script import Script, ScriptDirectory
    from sqlalchemy.engine import Connection

    from tasks.core.environments import Environment


@dataclass(frozen=True)
class Outcome:
    check: str
    ok: bool
    detail: str
    code: ExitCode

    def line(self) -> str:
        return f"  {'ok    ' if self.ok else 'FAILED'} {self.check}: {self.detail}"


def run_checks(
    session: Session,
    *,
    as_markdown: bool = False,
    extra: Sequence[Callable[[Session], list[Outcome]]] = (),
    base: str | None = None,
) -> list[Outcome]:
    """Run every check, print each outcome, and fail with the first failing check's code.

    `extra` are checks from the layers above (the committed checksum file) that run after the
    heads and downgrades checks and before the databases are built. With `base` (a git ref),
    lint judges only the revisions whose files differ from it."""
    from alembic.script import ScriptDirectory

    options = ci_options(session)
    try:
        script = ScriptDirectory.from_config(alembic_config(session.settings))
        revisions = list(reversed(list(script.walk_revisions())))  # base first
    except Exception as error:
        outcome = Outcome(
            "heads", False, f"the revision graph does not load: {error}", ExitCode.CI_HEADS
        )
        return _report(session, [outcome], as_markdown=as_markdown)
    since = since_revision(script, options["since"])
    only = None
    if base:  # read before any database is built: a wrong base is bad input, found at once
        from tasks.ci.changed_revisions import changed_revisions

        only = changed_revisions(script, base)
    trusted = _trusted(script, since)
    checked = [revision for revision in revisions if revision.revision not in trusted]
    outcomes = [check_heads(script, options["allowed_heads"]), *check_downgrades(checked)]
    for check in extra:
        outcomes += check(session)
    backends, notes = dialects_to_check(session, options)
    for note in notes:
        session.console.line(f"> note: {note}" if as_markdown else f"  note: {note}")
    if not backends:
        outcomes.append(_no_dialect_outcome(notes))
    for backend in backends:
        # Each check on a database of its own: a stairway that stops half-way must not fail
        # the models check, nor a models check inherit what the stairway left.
        with throwaway_database(session, backend, options) as (environment, connection):
            outcomes += stairway(
                session,
                environment,
                connection,
                checked,
                since=since,
                trusted=len(trusted),
                since_schema=options["since_schema"],
            )
        with throwaway_database(session, backend, options) as (environment, connection):
            outcomes.append(
                models_match(
                    session,
                    environment,
                    connection,
                    since=since,
                    since_schema=options["since_schema"],
                )
            )
    outcomes += lint_revisions(
        session, script, {**options, "backends": backends}, since=since, only=only
    )
    return _report(session, outcomes, as_markdown=as_markdown)


def _report(
    session: Session, outcomes: list[Outcome], *, as_markdown: bool = False
) -> list[Outcome]:
    if as_markdown:  # issue 12.7: one table for a pull request or $GITHUB_STEP_SUMMARY
        from tasks.plan.markdown import ci_markdown

        session.console.line(ci_markdown(outcomes).rstrip("\n"))
    for outcome in [] if as_markdown else outcomes:
        session.console.line(outcome.line())
    failed = [outcome for outcome in outcomes if not outcome.ok]
    session.record.details["failed"] = [f"{o.check}: {o.detail}" for o in failed]
    session.record.details["checks"] = [
        {"check": o.check, "ok": o.ok, "detail": o.detail, "exit_code": int(o.code)}
        for o in outcomes
    ]
    if failed:
        first = failed[0]
        raise CheckFailed(
            f"{plural(len(failed), 'check')} failed; first: {first.check}: {first.detail}",
            first.code,
        )
    return outcomes


def ci_options(session: Session) -> dict[str, Any]:
    """The validated `ci` settings, for other commands that build throwaway databases (squash)."""
    return _ci_options(session)


def _ci_options(session: Session) -> dict[str, Any]:
    """The `ci` settings, validated: a typo must fail loudly, not quietly disable a check."""
    from tasks.lint import classifier as lint

    raw = session.settings.extra.get("ci", {})
    try:
        allowed = int(raw.get("allowed_heads", 1))
    except (TypeError, ValueError):
        raise ConfigError("migrations.ci.allowed_heads must be a whole number") from None
    if allowed < 1:
        raise ConfigError("migrations.ci.allowed_heads must be at least 1")
    fail_on = raw.get("fail_on", "destructive")
    severities = fail_on.split(",") if isinstance(fail_on, str) else list(fail_on or [])
    failing = {str(item).strip().lower() for item in severities if str(item).strip()}
    known = set(lint.SEVERITIES)
    if failing - known:
        raise ConfigError(
            f"migrations.ci.fail_on: unknown severity {', '.join(sorted(failing - known))} "
            f"(known: {', '.join(sorted(known))})"
        )
    postgres_url = str(raw.get("postgres_url") or "").strip()
    if postgres_url:
        _require_postgresql(postgres_url)
    mysql_url = str(raw.get("mysql_url") or "").strip()
    return {
        "mysql_url": mysql_url,
        "allowed_heads": allowed,
        "database_prefix": _database_prefix(raw.get("database_prefix", DEFAULT_PREFIX)),
        "postgres_url": postgres_url,
        "fail_on": failing,
        "dialects": _configured_dialects(raw.get("dialects"), postgres_url, mysql_url),
        "since": str(raw.get("since") or "").strip() or None,
        "since_schema": _since_schema(session, raw.get("since_schema"), raw.get("since")),
    }


DEFAULT_PREFIX = "ci_check_"


def database_prefix(session: Session) -> str:
    """The configured `ci.database_prefix`, validated (preflight's history check uses it too)."""
    return _database_prefix(
        session.settings.extra.get("ci", {}).get("database_prefix", DEFAULT_PREFIX)
    )


def _database_prefix(value: Any) -> str:
    """`ci.database_prefix`: the start of every throwaway database's name (a prefix a shared
    CI server's permissions or clean-up jobs know), a plain identifier."""
    import re

    text = str(value or "").strip()
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,39}", text):
        raise ConfigError(
            "migrations.ci.database_prefix must be a lower-case identifier of at most 40 "
            f"characters (letters, digits, _), not {text!r}"
        )
    return text


# Dialects ci.check can build throwaway databases for, and how people spell them.
CI_DIALECTS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}


def _configured_dialects(value: Any, postgres_url: str, mysql_url: str = "") -> list[str] | None:
    """`ci.dialects` as a list, or None for the default (the shared environments' dialects)."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    if not names:
        return None
    unknown = [name for name in names if name not in CI_DIALECTS]
    if unknown:
        raise ConfigError(
            f"migrations.ci.dialects: ci.check cannot build a throwaway {unknown[0]} database "
            "(known: sqlite, postgresql, mysql)"
        )
    dialects = list(dict.fromkeys(CI_DIALECTS[name] for name in names))
    if "postgresql" in dialects and not postgres_url:
        raise ConfigError(
            "migrations.ci.dialects includes postgresql but migrations.ci.postgres_url is empty"
        )
    if "mysql" in dialects and not mysql_url:
        raise ConfigError(
            "migrations.ci.dialects includes mysql but migrations.ci.mysql_url is empty"
        )
    return dialects


# The environments whose databases a history is deployed to (local is each developer's own).
SHARED_ENVIRONMENTS = ("development", "staging", "production")


def dialects_to_check(session: Session, options: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(dialects for the stairway and models checks, notes to print).

    `ci.dialects` when set; otherwise the dialects of the shared environments whose URL is
    configured, with SQLite only when one of them is SQLite or none is set (then PostgreSQL
    too, when `ci.postgres_url` names a server, as before `ci.dialects` existed).
    """
    if options["dialects"] is not None:
        return options["dialects"], []
    found = _environment_dialects(session)
    if not found:
        return (["sqlite", "postgresql"] if options["postgres_url"] else ["sqlite"]), []
    notes = []
    dialects: list[str] = [dialect for dialect in ("sqlite", "postgresql") if dialect in found]
    if "mysql" in found and options.get("mysql_url"):
        dialects.append("mysql")
    # A dialect found but not checked is said, never skipped in silence (mysql without
    # ci.mysql_url included).
    unsupported = sorted(set(found) - {"sqlite", "postgresql"} - set(dialects))
    if unsupported:
        notes.append(
            f"environments on {', '.join(unsupported)}: ci.check has no throwaway server for "
            "them (migrations.ci.mysql_url names one for mysql; migrations.ci.dialects chooses "
            "what to check instead)"
        )
    if "postgresql" in dialects and not options["postgres_url"]:
        dialects.remove("postgresql")
        notes.append("environments on postgresql but migrations.ci.postgres_url is empty")
    return dialects, notes


def _environment_dialects(session: Session) -> list[str]:
    """Dialects of the shared environments that have a URL (unset ones are skipped)."""
    from tasks.core.environments import resolve_environment

    dialects = []
    for name in SHARED_ENVIRONMENTS:
        if name not in session.settings.environments:
            continue
        try:
            dialect = resolve_environment(session.settings, name).dialect
        except ConfigError:
            continue
        dialects.append("mysql" if dialect == "mariadb" else dialect)
    return sorted(set(dialects))


def _no_dialect_outcome(notes: list[str]) -> Outcome:
    detail = "no dialect to build the history on; set migrations.ci.dialects"
    if notes:
        detail += f" ({notes[0]})"
    return Outcome("stairway", False, detail, ExitCode.CI_STAIRWAY)


def since_revision(script: ScriptDirectory, since: str | None) -> str | None:
    """`ci.since` as a full revision id; an unknown one is a configuration error."""
    if since is None:
        return None
    try:
        revision = script.get_revision(since)
    except Exception:
        revision = None
    if revision is None:
        raise ConfigError(f"migrations.ci.since: {since!r} is not a revision of the scripts")
    return revision.revision


def _since_schema(session: Session, value: Any, since: Any) -> Path | None:
    """`ci.since_schema`: a SQL file of the schema at `ci.since` (pg_dump --schema-only, or
    SQLite's .schema), relative to the project; it needs `ci.since` and must be readable."""
    text = str(value or "").strip()
    if not text:
        return None
    if not str(since or "").strip():
        raise ConfigError("migrations.ci.since_schema needs migrations.ci.since (its revision)")
    path = session.settings.path(text)
    if not path.is_file():
        raise ConfigError(f"migrations.ci.since_schema: {path} is not a readable file")
    return path


def load_schema(
    session: Session, environment: Environment, connection: Connection, path: Path
) -> None:
    """Build the trusted start from a schema file: psql runs a pg_dump file as pg_dump meant it
    (its SET lines, functions, dollar quoting); the mariadb (or mysql) client runs a
    `mariadb-dump --no-data` file the same way; SQLite takes the script as it is."""
    if environment.dialect in ("mysql", "mariadb"):
        connection.commit()
        _load_mysql_schema(environment, path)
        return
    if environment.dialect == "sqlite":
        connection.commit()
        driver = connection.connection.driver_connection
        if driver is None:  # only an invalidated pool connection has no driver connection
            raise DatabaseError(f"{environment.name}: the SQLite connection was lost")
        driver.executescript(path.read_text(encoding="utf-8"))
        return
    import shutil
    import subprocess

    from tasks.backup.postgres import pg_environment

    psql = shutil.which("psql")
    if psql is None:
        raise ConfigError("migrations.ci.since_schema on PostgreSQL needs psql on PATH")
    connection.commit()
    completed = subprocess.run(
        [psql, "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "-f", str(path)],
        env=pg_environment(environment.url, session.settings.connect_timeout),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.splitlines() if line.strip()]
        raise DatabaseError(f"{path.name}: {lines[0] if lines else 'psql failed'}")


def _load_mysql_schema(environment: Environment, path: Path) -> None:
    import os
    import subprocess

    from tasks.backup.mysql import mysql_arguments, mysql_connection
    from tasks.backup.tools import find_tool

    client = find_tool("mariadb", "mysql")
    login = mysql_connection(environment.url)
    env = {key: value for key, value in os.environ.items() if key != "MYSQL_PWD"}
    if login.get("password"):
        env["MYSQL_PWD"] = login["password"]
    with path.open("rb") as schema:
        completed = subprocess.run(
            [client, *mysql_arguments(environment.url), "--default-character-set=utf8mb4",
             login.get("database", "")],
            stdin=schema, env=env, capture_output=True, check=False,
        )  # fmt: skip
    if completed.returncode != 0:
        errors = completed.stderr.decode("utf-8", "replace").splitlines()
        # The client frames the failing statement in "-----" lines; its ERROR line says why.
        lines = [line for line in errors if line.startswith("ERROR")] or [
            line for line in errors if line.strip().strip("-")
        ]
        raise DatabaseError(f"{path.name}: {lines[0] if lines else 'the client failed'}")


def _trusted(script: ScriptDirectory, since: str | None) -> set[str]:
    """`since` and every revision it depends on: history nobody will rewrite."""
    if since is None:
        return set()
    return {revision.revision for revision in script.iterate_revisions(since, "base")}


def _require_postgresql(url: str) -> None:
    from tasks.core.environments import normalize_url
    from tasks.core.settings import PROJECT_ROOT

    parsed = normalize_url(url, "migrations.ci.postgres_url", PROJECT_ROOT)
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(
            "migrations.ci.postgres_url must name a PostgreSQL server (or be empty for the "
            f"SQLite legs only), not {parsed.get_backend_name()}"
        )


# --- checks ---------------------------------------------------------------------------------


def check_heads(script: ScriptDirectory, allowed: int) -> Outcome:
    heads = sorted(script.get_heads())
    ok = len(heads) == allowed
    detail = f"{plural(len(heads), 'head')} {', '.join(heads)}" + (
        "" if ok else f"; {allowed} allowed"
    )
    return Outcome("heads", ok, detail, ExitCode.CI_HEADS)


def check_downgrades(revisions: list[Script]) -> list[Outcome]:
    missing = [revision.revision for revision in revisions if not has_real_downgrade(revision)]
    if not missing:
        return [
            Outcome(
                "downgrades",
                True,
                f"{plural(len(revisions), 'revision')} can be reverted",
                ExitCode.CI_DOWNGRADES,
            )
        ]
    return [
        Outcome(
            "downgrades",
            False,
            f"revision {revision} has no real downgrade()",
            ExitCode.CI_DOWNGRADES,
        )
        for revision in missing
    ]


def has_real_downgrade(revision: Script) -> bool:
    """A downgrade that does something; merge points and empty revisions need none."""
    if isinstance(revision.down_revision, tuple | list):
        return True
    tree = ast.parse(Path(revision.path).read_text(encoding="utf-8"))
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    if "downgrade" not in functions:
        return False
    if _is_empty(functions.get("upgrade")):
        return True
    return not _is_empty(functions["downgrade"]) and not _raises_not_implemented(
        functions["downgrade"]
    )


def _is_empty(function: ast.FunctionDef | None) -> bool:
    if function is None:
        return True
    return all(
        isinstance(statement, ast.Pass)
        or (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant))
        for statement in function.body
    )


def _raises_not_implemented(function: ast.FunctionDef) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name) and target.id == "NotImplementedError":
                return True
    return False


def stairway(
    session: Session,
    environment: Environment,
    connection: Connection,
    revisions: list[Script],
    *,
    since: str | None = None,
    trusted: int = 0,
    since_schema: Path | None = None,
) -> list[Outcome]:
    """Up, down to each parent, up again, for every revision in order (merges and branches
    included); trusted history (`since`
    and older) is only built, once, as the ground the checked revisions stand on: by running
    it, or from `ci.since_schema` (the schema at `since`, for a history that cannot run from
    an empty database) and a stamp."""
    from alembic import command

    run = runner(session, environment, connection)
    if since is not None:
        try:
            if since_schema is not None:
                load_schema(session, environment, connection, since_schema)
                run(command.stamp, since)
            else:
                run(command.upgrade, since)
        except Exception as error:
            detail = (
                f"{environment.dialect}: trusted history up to {since} (ci.since) does not "
                f"build: {_first_line(error)}"
            )
            return [Outcome("stairway", False, detail, ExitCode.CI_STAIRWAY)]
    for revision in revisions:
        steps: list[tuple[str, Callable[..., Any], str]] = [
            ("upgrade", command.upgrade, revision.revision)
        ]
        for down in _steps_down(revision):
            steps.append((f"downgrade to {_parent_name(down)}", command.downgrade, down))
            steps.append(("upgrade again", command.upgrade, revision.revision))
        for step, operation, target in steps:
            try:
                run(operation, target)
            except Exception as error:
                detail = (
                    f"{environment.dialect}: revision {revision.revision}: {step} failed: "
                    f"{_first_line(error)}"
                )
                return [Outcome("stairway", False, detail, ExitCode.CI_STAIRWAY)]
    detail = f"{environment.dialect}: {plural(len(revisions), 'revision')} up, down and up again"
    if trusted:
        detail += f" ({plural(trusted, 'older revision')} trusted: ci.since {since})"
    return [Outcome("stairway", True, detail, ExitCode.CI_STAIRWAY)]


def _steps_down(revision: Script) -> list[str]:
    """One downgrade target per parent, each reverting this revision alone.

    `<rev>@<parent>` is Alembic's branch-scoped form: it walks down the branch holding
    `<rev>` to `<parent>` and leaves every other branch (another head, the other side of a
    merge) where it is. A plain `<rev>-1` is an "Ambiguous walk" from a merge point, and a plain
    `<parent>` would also revert a sibling branch that descends from that parent."""
    down = revision.down_revision
    parents = (down,) if isinstance(down, str) else tuple(down or ())
    if not parents:
        return [f"{revision.revision}@base"]
    return [f"{revision.revision}@{parent}" for parent in parents]


def _parent_name(target: str) -> str:
    return target.partition("@")[2]


def models_match(
    session: Session,
    environment: Environment,
    connection: Connection,
    *,
    since: str | None = None,
    since_schema: Path | None = None,
) -> Outcome:
    """After the whole history, the database must be what the models describe, compared
    under the same configuration as `dev.check` (an adopted env.py's own options included)."""
    from alembic import command

    run = runner(session, environment, connection)
    try:
        if since is not None and since_schema is not None:
            load_schema(session, environment, connection, since_schema)
            run(command.stamp, since)
        run(command.upgrade, "heads")
    except Exception as error:
        detail = f"{environment.dialect}: could not build the history: {_first_line(error)}"
        return Outcome("models", False, detail, ExitCode.CI_MODELS)
    # A configuration error (a bad hook, an env.py that cannot be read) is not a history
    # failure: it ends the run as one line, exit 2.
    rules = env_comparison.for_session(session_for(session, environment), connection)
    try:
        differences = drift.compare(connection, session.metadata(), rules)
    except Exception as error:  # an element the comparison cannot render is a finding
        detail = f"{environment.dialect}: the comparison failed: {_first_line(error)}"
        return Outcome("models", False, detail, ExitCode.CI_MODELS)
    finally:
        connection.rollback()
    if differences:
        listed = "; ".join(drift.describe(difference) for difference in differences)
        return Outcome("models", False, f"{environment.dialect}: {listed}", ExitCode.CI_MODELS)
    return Outcome(
        "models", True, f"{environment.dialect}: models match the migrations", ExitCode.CI_MODELS
    )


def lint_revisions(
    session: Session,
    script: ScriptDirectory,
    options: dict[str, Any],
    since: str | None = None,
    only: set[str] | None = None,
) -> list[Outcome]:
    """Lint each revision's upgrade (newer than `since`, and among `only` when given: the ones a
    change touches) as it would run on the dialect CI builds (PostgreSQL first). Findings a
    revision's written consent covers pass."""
    from tasks.plan.steps import build_plan

    backends = options.get("backends") or ["postgresql", "sqlite"]
    postgres = options["postgres_url"] if "postgresql" in backends else ""
    linted = session_for(session, _environment_for_lint(postgres or "sqlite://", session.settings))
    current = (since,) if since else ()
    steps = planned_upgrade(script, "heads", current)
    planned = build_plan(
        linted, script, steps, direction="upgrade", current=current, target="heads"
    )
    failing = options["fail_on"]
    outcomes = []
    judged = [item for item in planned.revisions if only is None or item.revision in only]
    for item in judged:
        bad = [
            finding
            for finding in item.findings
            if finding.severity in failing and finding.rule not in item.consent
        ]
        if bad:
            rules = ", ".join(sorted({finding.rule for finding in bad}))
            outcomes.append(
                Outcome("lint", False, f"revision {item.revision}: {rules}", ExitCode.CI_LINT)
            )
    if not outcomes:
        total = sum(len(item.findings) for item in judged)
        detail = (
            f"{plural(len(judged), 'revision')}, {plural(total, 'finding')}, "
            f"none of {sorted(failing)}"
        )
        outcomes.append(Outcome("lint", True, detail, ExitCode.CI_LINT))
    return outcomes


# --- throwaway databases --------------------------------------------------------------------


@contextmanager
def throwaway_database(
    session: Session, backend: str, options: dict[str, Any]
) -> Iterator[tuple[Environment, Connection]]:
    """A database that exists only for this check, created and dropped here."""
    factories = {"sqlite": _throwaway_sqlite, "mysql": throwaway_mysql}
    factory = factories.get(backend, throwaway_postgres)
    with factory(options) as url:
        from tasks.core.engines import create_engine

        environment = _throwaway_environment(url, session.settings)
        kept = _kept_async_url(session, url)
        if kept is not None:
            environment = replace(environment, migration_url=kept)
        engine = create_engine(url, session.settings.connect_timeout)
        try:
            with engine.connect() as connection:
                yield environment, connection
        finally:
            engine.dispose()


@contextmanager
def _throwaway_sqlite(options: dict[str, Any]) -> Iterator[Any]:
    import tempfile

    from sqlalchemy.engine import URL

    prefix = options.get("database_prefix", DEFAULT_PREFIX)
    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        yield URL.create("sqlite", database=f"{directory}/ci.sqlite3")


@contextmanager
def throwaway_postgres(options: dict[str, Any]) -> Iterator[Any]:
    """A database of its own on `ci.postgres_url`'s PostgreSQL server, dropped afterwards."""
    with _throwaway_database(
        options, "postgres_url", quote='"', drop_suffix=" WITH (FORCE)", autocommit=True
    ) as url:
        yield url


@contextmanager
def throwaway_mysql(options: dict[str, Any]) -> Iterator[Any]:
    """A database of its own on `ci.mysql_url`'s MariaDB/MySQL server, dropped afterwards."""
    with _throwaway_database(
        options, "mysql_url", quote="`", drop_suffix="", autocommit=False
    ) as url:
        yield url


@contextmanager
def _throwaway_database(
    options: dict[str, Any], key: str, *, quote: str, drop_suffix: str, autocommit: bool
) -> Iterator[Any]:
    from sqlalchemy import text

    from tasks.core.engines import create_engine, describe_database_error
    from tasks.core.environments import normalize_url
    from tasks.core.errors import DatabaseError
    from tasks.core.settings import PROJECT_ROOT

    admin_url = normalize_url(options[key], f"migrations.ci.{key}", PROJECT_ROOT)
    name = f"{options.get('database_prefix', DEFAULT_PREFIX)}{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url)
    if autocommit:
        admin = admin.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {quote}{name}{quote}"))
    except Exception as error:
        admin.dispose()
        raise DatabaseError(
            f"ci.{key}: cannot create a throwaway database: {describe_database_error(error)}"
        ) from None
    try:
        yield admin_url.set(database=name)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {quote}{name}{quote}{drop_suffix}"))
        admin.dispose()


def _throwaway_environment(url: Any, settings: Any) -> Environment:
    """An unshared database judged under the strictest configured session settings: those of
    a protected environment when there is one, so lint sees what production will run."""
    from tasks.core.environments import Environment

    configured = sorted(settings.environments.values(), key=lambda item: not item.protected)
    strictest = configured[0] if configured else None
    return Environment(
        "ci",
        url,
        "(throwaway)",
        "ci.check",
        protected=False,
        shared=False,
        postgres_lock_timeout=strictest.postgres_lock_timeout if strictest else None,
        postgres_statement_timeout=strictest.postgres_statement_timeout if strictest else None,
    )


def _environment_for_lint(url: str, settings: Any) -> Environment:
    from sqlalchemy.engine import make_url

    from tasks.core.environments import SYNC_DRIVERS

    parsed = make_url(url)
    return _throwaway_environment(
        parsed.set(drivername=SYNC_DRIVERS.get(parsed.drivername, parsed.drivername)), settings
    )


def _kept_async_url(session: Session, url: Any) -> Any:
    """With `migrations.driver: keep`, a throwaway database is migrated on the application's
    own async driver as well (a revision may rely on it: asyncpg sends a `%` as it is, psycopg2
    reads it as a parameter), taken from the run's environment or else from the first
    configured environment of the same backend whose URL names an async driver."""
    from tasks.core.environments import driver_setting, resolve_environment

    if driver_setting(session.settings.extra.get("driver")) != "keep":
        return None
    for name in dict.fromkeys([session.record.environment, *session.settings.environments]):
        try:
            kept = resolve_environment(session.settings, name).migration_url
        except Exception:  # a name that is no environment, or one whose URL is not set
            kept = None
        if kept is not None and kept.get_backend_name() == url.get_backend_name():
            return url.set(drivername=kept.drivername)
    return None


def session_for(session: Session, environment: Environment) -> Session:
    return Session(
        session.settings,
        session.record,
        session.confirmer,
        session.console,
        _environment=environment,
        _metadata=session._metadata,
    )


def runner(
    session: Session, environment: Environment, connection: Connection
) -> Callable[..., None]:
    def migrate(operation: Callable[..., Any], revision: str, on: Connection) -> None:
        handover = EnvHandover(
            environment=environment,
            metadata_path=session.settings.metadata,
            connection=on,
            metadata=session.metadata(),
        )
        if on is not connection:  # asked in the event loop the async connection belongs to
            handover.database_identity = identity(on)
        operation(alembic_config(session.settings, handover, stdout=io.StringIO()), revision)
        if on.in_transaction():
            on.commit()

    def run(operation: Callable[..., Any], revision: str) -> None:
        try:
            if environment.migration_url is None:
                migrate(operation, revision, connection)
            else:  # `migrations.driver: keep`: the application's async driver, as upgrade does
                from tasks.core.async_driver import run_on_async_driver

                connection.commit()  # the checks' own connection waits, holding nothing
                run_on_async_driver(
                    environment, session.settings, lambda on: migrate(operation, revision, on)
                )
            connection.commit()
        except Exception:
            connection.rollback()
            raise

    return run


def _first_line(error: BaseException) -> str:
    from tasks.core.engines import describe_database_error

    return describe_database_error(error)
