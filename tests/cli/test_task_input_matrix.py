"""Hostile input, tested as a matrix: every task of every collection, discovered from the built
namespace (a new task is covered the day it is added), walked through every hostile case that
makes sense for it.

Each case asserts the contract of the README: the documented exit code (tasks.core.errors.ExitCode),
exactly one non-empty line on stderr naming the problem, no traceback anywhere, no "unexpected
error", and the database unchanged (schema_snapshot before and after, alembic_version rows
included). The databases are module-scoped PostgreSQL databases in known states, shared by
every case: a case that changed one fails, and the next case finds it rebuilt.

What each task is comes from `tests.task_matrix.discover` (the task's own body, run against a
stand-in for the shared context), not from a list in this file.
"""

from __future__ import annotations

import io
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from tasks.core import redaction
from tasks.core.errors import ExitCode
from tasks.core.settings import COLLECTIONS
from tests.conftest import schema_snapshot
from tests.helpers import (
    FIRST,
    HEAD,
    SECRET,
    FakeTerminal,
    ScriptCopy,
    copy_scripts,
    stderr_lines,
)
from tests.task_matrix import BRANCH, FOREIGN, SETTINGS, States, TaskInfo, discover

pytestmark = [pytest.mark.postgres, pytest.mark.hostile]

OWNERS = ("lead@example.com", "deputy@example.com")
INTRUDER = "mallory@example.com"
HOLDER = "hostile-matrix holder"
TASKS = discover()


# --- the cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    task: TaskInfo
    kind: str
    code: int
    state: str = "head"  # which prepared database the case runs against
    backend: str = "postgresql"

    @property
    def id(self) -> str:
        suffix = "" if self.backend == "postgresql" else f"-{self.backend}"
        return f"{self.task.full}-{self.kind}{suffix}"


def _database_cases(t: TaskInfo) -> Iterator[Case]:
    """Cases about the URL: the environment's variable, or ci.check's scratch server."""
    if t.environment is None and t.collection != "ci":
        return
    if not t.needs_database and t.collection != "ci":
        # A task that needs no database must not be stopped by a missing one.
        if t.shared:
            yield Case(t, "missing-url", ExitCode.OK)
        return
    if t.shared:  # local has a default (a SQLite file in the repository) when the variable is unset
        yield Case(t, "missing-url", ExitCode.USAGE)
    yield Case(t, "malformed-url", ExitCode.USAGE)
    yield Case(t, "unreachable-host", ExitCode.FAILED)
    yield Case(t, "wrong-password", ExitCode.FAILED)
    if t.environment is not None:
        yield Case(t, "dotenv-garbage", ExitCode.USAGE)


def _revision_cases(t: TaskInfo) -> Iterator[Case]:
    if "rev" in t.params:
        yield Case(t, "unknown-revision", ExitCode.USAGE)
        yield Case(t, "revision-beyond-head", ExitCode.USAGE)  # a relative step past the graph
    if "sql" in t.params:  # offline: Alembic reads the target without any database
        yield Case(t, "unknown-revision-sql", ExitCode.USAGE)
        yield Case(t, "revision-beyond-head-sql", ExitCode.USAGE)
    if t.name == "downgrade":
        # Alembic accepts upgrade/plan/preflight/stamp to the other branch's revision (it adds or
        # replaces a head); a downgrade to a revision that is not below the database is nonsense.
        yield Case(t, "other-branch-revision", ExitCode.USAGE)
        # The database is at two heads: "-1" could mean either branch (Alembic warns "ambiguous;
        # this usage will be disallowed in a future release").
        yield Case(t, "ambiguous-relative-downgrade", ExitCode.USAGE, state="branches")
    # Tasks that read no database (show, edit, merge) cannot be refused by its revision.
    if t.needs_database and (("rev" in t.params and t.name != "stamp") or t.creates_revision):
        # The database is at a revision of a branch this checkout lacks; stamp is the way out.
        code = ExitCode.PREFLIGHT_UNKNOWN_REVISION if t.name == "preflight" else ExitCode.REFUSED
        yield Case(t, "database-on-other-branch", code, state="foreign")
    if (
        t.params.get("rev") == "head"
        or t.name == "stamp"
        or (t.creates_revision and t.needs_database)
    ):
        code = {"preflight": ExitCode.PREFLIGHT_HEADS}.get(t.name, ExitCode.USAGE)
        yield Case(t, "several-heads", code)
    if t.name == "heads":
        yield Case(t, "several-heads", ExitCode.OK)  # the one line is the warning
    if t.collection == "ci":
        yield Case(t, "several-heads", ExitCode.CI_HEADS)


def _guard_cases(t: TaskInfo) -> Iterator[Case]:
    pending = "first" if t.name == "upgrade" else "head"  # an upgrade at head asks nothing
    if t.asks:
        yield Case(t, "no-tty", ExitCode.REFUSED, state=pending)
        yield Case(t, "wrong-confirmation", ExitCode.REFUSED, state=pending)
    if t.restricted:
        yield Case(t, "non-owner", ExitCode.REFUSED)
    if t.changes_database:
        # With nothing to do a protected upgrade reads, says so and never needs the lock.
        yield Case(t, "lock-held", ExitCode.LOCKED, state=pending)


# A value no flag of its kind can take, and what the one line must name; `rev` has cases of its
# own.
BAD_FLAG_VALUES = {
    "lock_timeout": ("--lock-timeout", "soon", ["--lock-timeout", "soon"]),
    "limit": ("--limit", "many", ["--limit", "many"]),
    "file": ("--file", "/nonexistent/backup.dump", ["/nonexistent/backup.dump", "does not exist"]),
    "message": ("--message", "   ", ["needs a message"]),
    "dialect": ("--dialect", "oracle9", ["--dialect", "oracle9"]),
    "format": ("--format", "pdf", ["--format", "pdf"]),
    "rev_id": ("--rev-id", "bad!id", ["--rev-id", "bad!id"]),
    "head": ("--head", "nosuchrev", ["nosuchrev"]),
    "branch_label": ("--branch-label", "a@b", ["--branch-label", "a@b"]),
    "depends_on": ("--depends-on", "nosuchrev", ["nosuchrev"]),
    "base": ("--base", "no-such-ref", ["--base"]),
    "reason": ("--reason", "   ", ["--reason"]),
}


def _flag_cases(t: TaskInfo) -> Iterator[Case]:
    for param in t.params:
        if param in BAD_FLAG_VALUES:
            yield Case(t, f"bad-{param.replace('_', '-')}", ExitCode.USAGE)


def _ci_cases(t: TaskInfo) -> Iterator[Case]:
    """ci.check's own settings: a typo must fail, not quietly switch a check off."""
    if t.collection == "ci":
        yield Case(t, "non-postgresql-url", ExitCode.USAGE)
        yield Case(t, "unknown-lint-severity", ExitCode.USAGE)
        yield Case(t, "no-allowed-heads", ExitCode.USAGE)


def _file_cases(t: TaskInfo) -> Iterator[Case]:
    yield Case(t, "garbage-setting", ExitCode.USAGE)
    yield Case(t, "unwritable-log", ExitCode.USAGE)
    if t.backs_up:
        # upgrade and sync only back up when there is something to apply
        state = "first" if t.name in {"upgrade", "sync"} else "head"
        yield Case(t, "unwritable-backup-dir", ExitCode.USAGE, state=state)


def _cases() -> list[Case]:
    cases = [
        case
        for t in TASKS
        for make in (
            _database_cases,
            _revision_cases,
            _flag_cases,
            _guard_cases,
            _ci_cases,
            _file_cases,
        )
        for case in make(t)
    ]
    # The local collection's default database is a SQLite file: its own lock (flock), backups
    # (the SQLite backup API) and "unreachable" (a file in a folder that does not exist).
    sqlite = [
        _on_sqlite(case)
        for case in cases
        if case.task.collection == "local" and case.kind not in SERVER_ONLY_KINDS
    ]
    return cases + sqlite


def _on_sqlite(case: Case) -> Case:
    """A SQLite file that is not there is a configuration problem to a read, which never
    creates one (exit 2); a task that writes creates the file, and fails on the missing folder."""
    sqlite = replace(case, backend="sqlite")
    if case.kind == "unreachable-host" and not case.task.changes_database:
        sqlite = replace(sqlite, code=ExitCode.USAGE)
    return sqlite


SERVER_ONLY_KINDS = frozenset({"wrong-password"})  # a SQLite file has no one to log in as
CASES = _cases()

# (task name, case kind) -> the bug, for cases that fail today in files owned by work in progress.
# Empty: relative targets past the graph (head+1, @) and "-1" from a database at two heads were
# fixed in tasks/migrate/commands.py (_plan, _downgrade_steps).
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def _params(cases: list[Case]) -> list[Any]:
    return [
        pytest.param(
            case,
            id=case.id,
            marks=[pytest.mark.xfail(reason=KNOWN_BUGS[key], strict=True)]
            if (key := (case.task.name, case.kind)) in KNOWN_BUGS
            else [],
        )
        for case in cases
    ]


# --- databases and scripts ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def states(pg_server, tmp_path_factory) -> Iterator[States]:
    prepared = States(pg_server, tmp_path_factory.mktemp("hostile-databases"))
    yield prepared
    prepared.drop()


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> dict[str, ScriptCopy]:
    """Private copies of alembic/: `plain` (a revision written by mistake never lands in the
    repository) and `branched` (a second head, BRANCH, revising FIRST)."""
    root = tmp_path_factory.mktemp("hostile-scripts")
    branched = copy_scripts(root / "branched")
    branched.add_branch(BRANCH, FIRST)
    return {"plain": copy_scripts(root / "plain"), "branched": branched}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- arranging one case -------------------------------------------------------------------------


@dataclass
class Scene:
    """One case's surroundings: the project, its database, and what the case changed."""

    project: Any
    url: str
    states: States
    scripts: dict[str, ScriptCopy]
    needles: list[str] = field(default_factory=list)
    holder: Any = None
    backend: str = "postgresql"
    must_not_exist: Path | None = None


def base_argv(scene: Scene, t: TaskInfo, *, yes: bool = True) -> list[str]:
    """The task with what it needs to get past its own argument checks."""
    argv = [t.full]
    params = t.params
    if params.get("rev") == "":  # required (downgrade, stamp): one step below the database
        argv += ["--rev", FIRST]
    if "message" in params:
        argv += ["--message", "hostile matrix"]
    if "accept_edit" in params:  # repair: what to repair, and why
        argv += ["--accept-edit", "--reason", "hostile matrix"]
    if "file" in params:
        argv += ["--file", str(scene.states.backup_file(scene.project, scene.backend))]
    if yes and "yes" in params:
        argv.append("--yes")
    return argv


def _bad_url(scene: Scene, t: TaskInfo, url: str) -> None:
    if t.collection == "ci":
        scene.project.setenv("INVOKE_MIGRATIONS_CI_POSTGRES_URL", url)
    else:
        scene.project.setenv(t.url_variable, url)


def arrange(scene: Scene, case: Case) -> list[str]:
    """Set up `case` and return the argv to run; fills scene.needles with what the one stderr
    line must name."""
    t, project = case.task, scene.project
    kind = case.kind
    argv = base_argv(scene, t)
    database = sqlalchemy.engine.make_url(scene.url).database
    if t.name == "edit":  # an editor that opens nothing and succeeds
        project.setenv("EDITOR", "true")
    if kind == "missing-url":
        project.monkeypatch.delenv(t.url_variable)
        if t.needs_database:
            scene.needles += [t.url_variable, "not set"]
    elif kind == "malformed-url":
        _bad_url(scene, t, f"postgresql://postgres:{SECRET}@127.0.0.1:port/{database}")
        variable = "migrations.ci.postgres_url" if t.collection == "ci" else t.url_variable
        scene.needles += [variable, "not a valid"]
    elif kind == "unreachable-host" and scene.backend == "sqlite":
        missing = project.tmp / "no-such-folder"
        _bad_url(scene, t, f"sqlite:///{missing / 'local.sqlite3'}")
        scene.needles += [str(missing)]
        scene.must_not_exist = missing
    elif kind == "unreachable-host":
        port = _closed_port()
        _bad_url(scene, t, f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/{database}")
        scene.needles += [str(port)]
    elif kind == "wrong-password":
        # Trust authentication takes any password for a role that exists; a role that does not
        # exist is rejected like a wrong password, on the same authentication path.
        role = f"nobody_{uuid.uuid4().hex[:8]}"
        _bad_url(scene, t, f"postgresql://{role}:{SECRET}@127.0.0.1:5432/{database}")
        scene.needles += [role]
    elif kind == "dotenv-garbage":
        project.monkeypatch.delenv(t.url_variable)
        (project.dotenv_dir / ".env").write_text(
            f"# written by the hostile matrix\n{t.url_variable}={scene.url}\n"
            "this line is not a variable\n"
        )
        scene.needles += [".env", "line 3"]
    elif kind.endswith("-sql"):
        # downgrade --sql needs a FROM:TO range
        target = "nosuchrev" if kind.startswith("unknown") else "head+1"
        if t.name == "downgrade":
            target = f"head:{'nosuchrev' if kind.startswith('unknown') else 'head-5'}"
        argv = [*_without_flag(argv, "--rev"), "--sql", "--rev", target]
        if kind.startswith("unknown"):
            scene.needles += ["nosuchrev"]
    elif kind == "unknown-revision":
        argv = [arg for arg in argv if arg not in {"--rev", FIRST}] + ["--rev", "nosuchrev"]
        scene.needles += ["nosuchrev"]
    elif kind == "revision-beyond-head":
        argv = [arg for arg in argv if arg not in {"--rev", FIRST}] + ["--rev", "head+1"]
        scene.needles += ["head+1"]
    elif kind == "garbage-setting":
        project.setenv("INVOKE_MIGRATIONS_CONNECT_TIMEOUT", "soon")
        scene.needles += ["migrations.connect_timeout", "number"]
    elif kind.startswith("bad-"):
        flag, value, needles = BAD_FLAG_VALUES[kind.removeprefix("bad-").replace("-", "_")]
        argv = [*_without_flag(argv, flag), flag, value]
        scene.needles += needles
    elif kind == "non-postgresql-url":
        _bad_url(scene, t, f"mysql://root:{SECRET}@127.0.0.1:3306/test")
        scene.needles += ["migrations.ci.postgres_url", "PostgreSQL"]
    elif kind == "unknown-lint-severity":
        project.setenv("INVOKE_MIGRATIONS_CI_FAIL_ON", "destructive,destrutive")
        scene.needles += ["migrations.ci.fail_on", "destrutive"]
    elif kind == "no-allowed-heads":
        project.setenv("INVOKE_MIGRATIONS_CI_ALLOWED_HEADS", "0")
        scene.needles += ["migrations.ci.allowed_heads"]
    elif kind == "other-branch-revision":
        project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(scene.scripts["branched"].ini))
        argv = [arg for arg in argv if arg not in {"--rev", FIRST}] + ["--rev", BRANCH]
        scene.needles += [BRANCH]
    elif kind == "ambiguous-relative-downgrade":
        project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(scene.scripts["branched"].ini))
        argv = [*_without_flag(argv, "--rev"), "--rev", "-1"]
        scene.needles += ["-1"]
    elif kind == "database-on-other-branch":
        scene.needles += [FOREIGN]
    elif kind == "several-heads":
        project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(scene.scripts["branched"].ini))
        if t.name == "stamp":
            argv = [arg for arg in argv if arg not in {"--rev", FIRST}] + ["--rev", "head"]
        scene.needles += {"heads": ["2 heads", "merge"], "preflight": [BRANCH, HEAD]}.get(
            t.name, ["head"]
        )
    elif kind == "no-tty":
        argv = base_argv(scene, t, yes=False)
        # piped consent is not consent
        project.monkeypatch.setattr(sys, "stdin", io.StringIO("y\nyes\nproduction\n"))
        scene.needles += ["terminal", "--yes"]
    elif kind == "wrong-confirmation":
        argv = base_argv(scene, t, yes=False)
        answer = "prod\n" if t.protected else "n\n"
        project.monkeypatch.setattr(sys, "stdin", FakeTerminal(answer * 3))
        scene.needles += ["does not match" if t.protected else "not confirmed"]
    elif kind == "non-owner":
        project.setenv("INVOKE_MIGRATIONS_OWNERS", ",".join(OWNERS))
        project.setenv("MIGRATIONS_OPERATOR", INTRUDER)
        scene.needles += [*OWNERS, INTRUDER]
    elif kind == "lock-held":
        # No wait: that the wait polls, then gives up naming the holder, is the lock's own
        # tests' subject (tests/guard/test_lock_*); here every task must refuse.
        if "lock_timeout" in t.params:
            argv += ["--lock-timeout", "0"]
        else:
            project.setenv("INVOKE_MIGRATIONS_LOCK_TIMEOUT", "0")
        scene.holder = _hold_lock(scene.url)
        scene.needles += ["migration lock", HOLDER]
    elif kind == "unwritable-log":
        blocker = project.tmp / "log-is-a-file"
        blocker.write_text("not a directory\n")
        project.setenv("INVOKE_MIGRATIONS_LOG_FILE", str(blocker / "logs" / "migrations.jsonl"))
        scene.needles += ["run log"]
    elif kind == "unwritable-backup-dir":
        blocker = project.tmp / "backups-is-a-file"
        blocker.write_text("not a directory\n")
        project.setenv("INVOKE_MIGRATIONS_BACKUP_DIR", str(blocker / "backups"))
        if t.params.get("backup") is False:
            argv.append("--backup")
        scene.needles += ["backup directory"]
    else:  # pragma: no cover - a case kind without an arrangement is a bug in this file
        raise AssertionError(f"no arrangement for {kind}")
    return argv


def _without_flag(argv: list[str], flag: str) -> list[str]:
    if flag not in argv:
        return argv
    at = argv.index(flag)
    return argv[:at] + argv[at + 2 :]


def _hold_lock(url: str) -> Any:
    """Hold the database's migration lock on our own connection, as another runner would."""
    from tasks.core.environments import Environment
    from tasks.guard.lock import migration_lock

    environment = Environment(
        "development", sqlalchemy.engine.make_url(url), "DATABASE_URL_DEVELOPMENT", "test", False
    )
    held = migration_lock(environment, label=HOLDER, timeout=0)
    held.__enter__()
    return held


# --- the matrix ---------------------------------------------------------------------------------


def test_every_task_is_in_the_matrix():
    """Discovery found every collection, and every task meets at least the log case."""
    collections = {t.collection for t in TASKS}
    assert collections == {*COLLECTIONS, "ci"}
    covered = {case.task.full for case in CASES}
    assert covered == {t.full for t in TASKS}


def test_every_flag_that_takes_a_value_has_a_hostile_value():
    """A new flag that takes a value needs its bad value in BAD_FLAG_VALUES (rev has its own)."""
    valued = {
        name
        for t in TASKS
        for name, default in t.params.items()
        if not isinstance(default, bool) and name != "rev"
    }
    assert valued <= set(BAD_FLAG_VALUES), valued - set(BAD_FLAG_VALUES)


@pytest.mark.parametrize("case", _params(CASES))
def test_hostile_input(project, states, scripts, case: Case):
    url = states.ready(case.state, project, case.backend)
    for variable in [env.url_variable for env in SETTINGS.environments.values()]:
        # Only the task's own: a second environment on its database is refused (test_scope).
        if variable == case.task.url_variable:
            project.setenv(variable, url)
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(scripts["plain"].ini))
    project.monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal, even under -s
    # as in a fresh process: no password known from an earlier test masks a leak in this one
    project.monkeypatch.setattr(redaction, "_secrets", set())
    scene = Scene(project, url, states, scripts, backend=case.backend)
    files_before = {name: copy.files() for name, copy in scripts.items()}
    argv = arrange(scene, case)
    audited = case.task.shared and case.task.changes_database
    audit_before = _audit_rows(url) if audited else []
    states.forget(case.state, case.backend)  # from here on a failing case leaves it to be checked

    started = time.monotonic()
    try:
        # Outside pytest a Python warning is printed to stderr: more lines than the one allowed.
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            result = project.invoke(*argv)
    finally:
        if scene.holder is not None:
            scene.holder.__exit__(None, None, None)
    elapsed = time.monotonic() - started

    assert "Traceback" not in result.output, result.output
    assert "unexpected error" not in result.stderr, result.stderr
    assert [str(w.message) for w in warned] == [], "warnings would reach stderr"
    assert result.code == int(case.code), (
        f"exit {result.code}, expected {case.code}:\n{result.output}"
    )
    lines = stderr_lines(result)
    if case.code == ExitCode.OK and not scene.needles:
        assert lines == [], result.stderr
    else:
        assert len(lines) == 1, f"expected one line on stderr:\n{result.stderr}"
        for needle in scene.needles:
            assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
        if case.code != ExitCode.OK:
            assert lines[0].startswith(f"{case.task.full}: "), lines[0]
    if case.kind == "unreachable-host":
        assert elapsed < 30, f"gave up only after {elapsed:.0f} s"
    if scene.must_not_exist is not None:
        assert not scene.must_not_exist.exists(), f"{scene.must_not_exist} was created"
    assert SECRET not in result.output
    assert states.unchanged(case.state, case.backend), "the database changed"
    files_after = {name: copy.files() for name, copy in scripts.items()}
    if case.code == ExitCode.OK and case.task.creates_revision:
        # A revision needs no database (issue 18.2): it succeeds and writes one new file at most.
        added = {name: files_after[name] - files_before[name] for name in files_after}
        assert sum(len(names) for names in added.values()) <= 1, added
        files_after = {name: files_after[name] - added[name] for name in files_after}
    assert files_after == files_before
    if audited:
        _assert_audited_as_unchanged(case, url, audit_before)


# Cases that stop before the run knows its database (or that point it at another one), and flag
# values rejected like Invoke's own parse errors: nothing to audit in the case's database.
UNAUDITED_KINDS = frozenset(
    {
        "bad-lock-timeout",
        "missing-url",
        "malformed-url",
        "unreachable-host",
        "wrong-password",
        "dotenv-garbage",
        # unwritable-log is audited: a shared database still records the refused attempt
        "garbage-setting",
    }
)


def _audit_rows(url: str) -> list[dict]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            if not sqlalchemy.inspect(connection).has_table("migration_audit"):
                return []
            query = sqlalchemy.text("SELECT * FROM migration_audit ORDER BY id")
            return [dict(row._mapping) for row in connection.execute(query)]
    finally:
        engine.dispose()


def _assert_audited_as_unchanged(case: Case, url: str, before: list[dict]) -> None:
    """README, Records: every attempt to change a shared database, refused and failed ones
    included, leaves one row; a row for an attempt that changed nothing must not claim a change
    (NULL is "unknown", never a revision)."""
    seen = {row["id"] for row in before}
    new = [row for row in _audit_rows(url) if row["id"] not in seen]
    if case.kind in UNAUDITED_KINDS or case.kind.endswith("-sql"):  # offline: no database
        assert new == [], new
        return
    assert len(new) == 1, f"expected one audit row, got {new}"
    row = new[0]
    assert row["task"] == case.task.full and row["outcome"] in {"refused", "failed"}, row
    assert row["revision_after"] in (None, row["revision_before"]), row
    assert row["error"], row


# --- settings from variables ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INVOKE_MIGRATIONS_CONNECT_TIMEOUT", "2.5"),
        ("INVOKE_MIGRATIONS_LOCK_TIMEOUT", "0.5"),
        ("INVOKE_MIGRATIONS_LINT_IGNORE", "prefer-robust-stmts,adding-foreign-key-constraint"),
        ("INVOKE_MIGRATIONS_CI_ALLOWED_HEADS", "1"),
    ],
)
def test_settings_from_variables_are_taken(project, states, variable, value):
    """README: scalars and lists are overridable through INVOKE_MIGRATIONS_* variables. Invoke
    casts a variable to the type of the value it overrides, inside its own loading: over an int
    or a list this was a traceback before any task ran."""
    url = states.ready("head", project)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    project.setenv(variable, value)

    result = project.invoke("dev.plan")

    assert result.code == ExitCode.OK, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("variable", "argv"),
    [
        ("INVOKE_MIGRATIONS_LOCK_TIMEOUT", ("dev.upgrade",)),
        ("INVOKE_MIGRATIONS_CI_ALLOWED_HEADS", ("ci.check",)),
    ],
)
def test_garbage_numbers_in_variables_are_one_line(project, states, variable, argv):
    url = states.ready("head", project)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    project.setenv(variable, "plenty")
    key = variable.removeprefix("INVOKE_MIGRATIONS_").lower().replace("ci_", "ci.", 1)

    result = project.invoke(*argv)

    assert result.code == ExitCode.USAGE, result.output
    lines = stderr_lines(result)
    assert len(lines) == 1 and f"migrations.{key}" in lines[0], result.stderr
    assert "Traceback" not in result.output


# --- what the audit shows of a hostile attempt --------------------------------------------------


def test_audit_view_of_a_failed_attempt_claims_no_change(project, states):
    """A downgrade to a revision that does not exist fails before anything runs; its audit row
    has no revision after (unknown), which `audit` must not show as a move to base."""
    url = states.ready("head", project)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    refused = project.invoke("dev.downgrade", "--rev", "nosuchrev", "--yes")
    assert refused.code == ExitCode.USAGE, refused.output

    result = project.invoke("dev.audit", "--limit", "1")

    assert result.code == ExitCode.OK, result.output
    line = result.stdout.splitlines()[1]  # under the table's header
    assert "dev.downgrade" in line and "failed" in line, line
    assert f"{HEAD} -> base" not in line, line
    assert states.unchanged("head")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_timeouts_are_one_line(project, states, value):
    """float() accepts these; a lock wait of nan seconds would never give up, or never wait."""
    url = states.ready("head", project)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    project.setenv("INVOKE_MIGRATIONS_LOCK_TIMEOUT", value)
    before = schema_snapshot(url)

    result = project.invoke("dev.upgrade")

    assert result.code == ExitCode.USAGE, result.output
    lines = stderr_lines(result)
    assert len(lines) == 1 and "migrations.lock_timeout must be a finite number" in lines[0]
    assert schema_snapshot(url) == before
