"""Hostile input, tested as a matrix: every task of every collection, discovered from the built
namespace (a new task is covered the day it is added), walked through every hostile case that
makes sense for it.

Each case asserts the contract of the README: the documented exit code (tasks.errors.ExitCode),
exactly one non-empty line on stderr naming the problem, no traceback anywhere, no "unexpected
error", and the database unchanged (schema_snapshot before and after, alembic_version rows
included). The databases are module-scoped PostgreSQL databases in known states, shared by
every case: a case that changed one fails, and the next case finds it rebuilt.

What a task is (changes the database? needs one? creates revisions?) is not copied from the
code into this file: its body is called once with a stand-in for `tasks.context.run_task`, which
records what the task tells the shared context. What asks and what backs up follows the README's
safety model (see `TaskInfo`).
"""

from __future__ import annotations

import inspect
import io
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from invoke import Context

from tasks import context as task_context
from tasks.errors import ExitCode
from tasks.namespace import build_namespace
from tasks.settings import COLLECTIONS, DEFAULTS, settings_from_mapping
from tests.conftest import create_pg_database, drop_pg_database, schema_snapshot
from tests.helpers import (
    FIRST,
    HEAD,
    SECRET,
    FakeTerminal,
    ScriptCopy,
    copy_scripts,
    prepare,
    stderr_lines,
)

pytestmark = pytest.mark.postgres

BRANCH = "b0b0b0b0b0b0"  # the second head of the branched script copy (revises FIRST)
FOREIGN = "f0f0f0f0f0f0"  # a revision of a branch this checkout does not have
OWNERS = ("lead@example.com", "deputy@example.com")
INTRUDER = "mallory@example.com"
HOLDER = "hostile-matrix holder"
SETTINGS = settings_from_mapping(DEFAULTS)

# --- what each task is, discovered --------------------------------------------------------------


@dataclass(frozen=True)
class TaskInfo:
    collection: str
    name: str
    defaults: tuple[tuple[str, Any], ...]  # (parameter, default), the task's flags
    changes_database: bool
    needs_database: bool
    creates_revision: bool

    @property
    def full(self) -> str:
        return f"{self.collection}.{self.name}"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.defaults)

    @property
    def environment(self) -> str | None:
        """The environment the collection names; None for `ci`, which has none."""
        return COLLECTIONS.get(self.collection)

    @property
    def url_variable(self) -> str | None:
        env = self.environment
        return SETTINGS.environment(env).url_variable if env else None

    @property
    def protected(self) -> bool:
        env = self.environment
        return bool(env) and SETTINGS.environment(env).protected

    @property
    def shared(self) -> bool:
        return self.environment not in (None, "local")

    @property
    def asks(self) -> bool:
        """README, "What asks": tasks with --yes ask, except an upgrade of an unprotected
        environment."""
        return "yes" in self.params and (self.name != "upgrade" or self.protected)

    @property
    def backs_up(self) -> bool:
        """`backup` itself; a --backup flag that is off by default; and, on by default, a
        protected upgrade and a downgrade of a shared environment (README, safety model)."""
        if self.name == "backup":
            return True
        if "backup" not in self.params:
            return False
        if self.params["backup"] is False:
            return True
        return (self.name == "upgrade" and self.protected) or (
            self.name == "downgrade" and self.shared
        )

    @property
    def restricted(self) -> bool:
        """README, ownership policy: revisions anywhere, changes to a shared database."""
        return self.creates_revision or (self.changes_database and self.shared)


def _how_it_runs(task: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """Call the task's body with a stand-in for run_task and return what it would tell it."""
    original = task_context.run_task
    signature = inspect.signature(original)
    captured: dict[str, Any] = {}

    def stand_in(*args: Any, **kwargs: Any) -> None:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        captured.update(bound.arguments)

    modules = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("tasks.")
        and module is not task_context
        and vars(module).get("run_task") is original
    ]
    for module in modules:
        module.run_task = stand_in
    try:
        task.body(Context(), **defaults)
    finally:
        for module in modules:
            module.run_task = original
    assert captured, f"{task.name} does not run through tasks.context.run_task"
    return captured


def discover() -> list[TaskInfo]:
    namespace = build_namespace()
    found = []
    for collection_name, collection in sorted(namespace.collections.items()):
        for task_name, task in sorted(collection.tasks.items()):
            defaults = {argument.name: argument.default for argument in task.get_arguments()}
            how = _how_it_runs(task, defaults)
            found.append(
                TaskInfo(
                    collection=collection_name,
                    name=task_name,
                    defaults=tuple(sorted(defaults.items())),
                    changes_database=how["changes_database"],
                    needs_database=how["needs_database"],
                    creates_revision=how["creates_revision"],
                )
            )
    return found


TASKS = discover()


# --- the cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    task: TaskInfo
    kind: str
    code: int
    state: str = "head"  # which prepared database the case runs against

    @property
    def id(self) -> str:
        return f"{self.task.full}-{self.kind}"


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
    if t.name == "downgrade":
        # Alembic accepts upgrade/plan/preflight/stamp to the other branch's revision (it adds or
        # replaces a head); a downgrade to a revision that is not below the database is nonsense.
        yield Case(t, "other-branch-revision", ExitCode.USAGE)
    if ("rev" in t.params and t.name != "stamp") or t.creates_revision:
        # The database is at a revision of a branch this checkout lacks; stamp is the way out.
        code = ExitCode.PREFLIGHT_UNKNOWN_REVISION if t.name == "preflight" else ExitCode.REFUSED
        yield Case(t, "database-on-other-branch", code, state="foreign")
    if t.params.get("rev") == "head" or t.name == "stamp" or t.creates_revision:
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
        yield Case(t, "lock-held", ExitCode.LOCKED)


def _file_cases(t: TaskInfo) -> Iterator[Case]:
    yield Case(t, "unwritable-log", ExitCode.USAGE)
    if t.backs_up:
        # upgrade and sync only back up when there is something to apply
        state = "first" if t.name in {"upgrade", "sync"} else "head"
        yield Case(t, "unwritable-backup-dir", ExitCode.USAGE, state=state)


CASES = [
    case
    for t in TASKS
    for make in (_database_cases, _revision_cases, _guard_cases, _file_cases)
    for case in make(t)
]


# --- databases and scripts ----------------------------------------------------------------------


class States:
    """Module databases in known states: `head`, `first` and `foreign` (at head, but recording a
    revision of another branch). Checked before each case and rebuilt when a case changed one."""

    def __init__(self, pg_server: Any) -> None:
        self.pg_server = pg_server
        self.urls: dict[str, str] = {}
        self.snapshots: dict[str, dict] = {}
        self.clean: set[str] = set()  # states whose last case proved them unchanged
        self.backup: Path | None = None

    def ready(self, state: str, project: Any) -> str:
        if state not in self.urls:
            name = f"t_hostile_{state}_{uuid.uuid4().hex[:8]}"
            self.urls[state] = create_pg_database(self.pg_server, name)
        url = self.urls[state]
        if state not in self.clean and (
            state not in self.snapshots or schema_snapshot(url) != self.snapshots[state]
        ):
            _empty(url)
            prepare(project, url, FIRST if state == "first" else HEAD)
            if state == "foreign":
                _execute(url, f"UPDATE alembic_version SET version_num = '{FOREIGN}'")
            self.snapshots[state] = schema_snapshot(url)
        self.clean.add(state)
        return url

    def unchanged(self, state: str) -> bool:
        """Whether the state's database is as prepared; until proved, it is checked again."""
        self.clean.discard(state)
        if schema_snapshot(self.urls[state]) != self.snapshots[state]:
            return False
        self.clean.add(state)
        return True

    def backup_file(self, project: Any, directory: Path) -> Path:
        """A pg_dump of the `first` state: restoring it over `head` would show."""
        if self.backup is None:
            url = self.ready("first", project)
            path = directory / "first.dump"
            libpq = sqlalchemy.engine.make_url(url).set(drivername="postgresql")
            dump = ["pg_dump", "--format=custom", f"--file={path}", "--no-password"]
            subprocess.run(
                [*dump, libpq.render_as_string(hide_password=False)],
                check=True,
                capture_output=True,
            )
            self.backup = path
        return self.backup

    def drop(self) -> None:
        for url in self.urls.values():
            drop_pg_database(self.pg_server, sqlalchemy.engine.make_url(url).database)


def _execute(url: str, statement: str) -> None:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(statement))
    finally:
        engine.dispose()


def _empty(url: str) -> None:
    _execute(url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")


@pytest.fixture(scope="module")
def states(pg_server) -> Iterator[States]:
    prepared = States(pg_server)
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


def base_argv(scene: Scene, t: TaskInfo, *, yes: bool = True) -> list[str]:
    """The task with what it needs to get past its own argument checks."""
    argv = [t.full]
    params = t.params
    if params.get("rev") == "":  # required (downgrade, stamp): one step below the database
        argv += ["--rev", FIRST]
    if "message" in params:
        argv += ["--message", "hostile matrix"]
    if "file" in params:
        argv += ["--file", str(scene.states.backup_file(scene.project, scene.project.tmp))]
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
    if kind == "missing-url":
        project.monkeypatch.delenv(t.url_variable)
        if t.needs_database:
            scene.needles += [t.url_variable, "not set"]
    elif kind == "malformed-url":
        _bad_url(scene, t, f"postgresql://postgres:{SECRET}@127.0.0.1:port/{database}")
        variable = "migrations.ci.postgres_url" if t.collection == "ci" else t.url_variable
        scene.needles += [variable, "not a valid"]
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
    elif kind == "unknown-revision":
        argv = [arg for arg in argv if arg not in {"--rev", FIRST}] + ["--rev", "nosuchrev"]
        scene.needles += ["nosuchrev"]
    elif kind == "other-branch-revision":
        project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(scene.scripts["branched"].ini))
        argv = [arg for arg in argv if arg not in {"--rev", FIRST}] + ["--rev", BRANCH]
        scene.needles += [BRANCH]
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
        if "lock_timeout" in t.params:
            argv += ["--lock-timeout", "1"]
        else:
            project.setenv("INVOKE_MIGRATIONS_LOCK_TIMEOUT", "1")
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


def _hold_lock(url: str) -> Any:
    """Hold the database's migration lock on our own connection, as another runner would."""
    from tasks.environments import Environment
    from tasks.locking import migration_lock

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


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input(project, states, scripts, case: Case):
    url = states.ready(case.state, project)
    for variable in [env.url_variable for env in SETTINGS.environments.values()]:
        project.setenv(variable, url)
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(scripts["plain"].ini))
    project.monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal, even under -s
    scene = Scene(project, url, states, scripts)
    files_before = {name: copy.files() for name, copy in scripts.items()}
    argv = arrange(scene, case)
    states.clean.discard(case.state)  # from here on, a failing case leaves it to be checked

    started = time.monotonic()
    try:
        result = project.invoke(*argv)
    finally:
        if scene.holder is not None:
            scene.holder.__exit__(None, None, None)
    elapsed = time.monotonic() - started

    assert "Traceback" not in result.output, result.output
    assert "unexpected error" not in result.stderr, result.stderr
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
    assert SECRET not in result.output
    assert states.unchanged(case.state), "the database changed"
    assert {name: copy.files() for name, copy in scripts.items()} == files_before
