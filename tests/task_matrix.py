"""What the matrix test modules share: every task of every collection, discovered from the built
namespace, and module databases in known states.

What a task is (changes the database? needs one? creates revisions?) is not copied from the code
into the tests: each task's body is called once with a stand-in for `tasks.cli.context.run_task`,
which records what the task tells the shared context. What asks and what backs up follows the
README's safety model (see `TaskInfo`).
"""

from __future__ import annotations

import inspect
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy
from invoke import Context

from tasks.cli import context as task_context
from tasks.cli.namespace import build_namespace
from tasks.core.settings import COLLECTIONS, DEFAULTS, settings_from_mapping
from tests.conftest import create_pg_database, drop_pg_database, schema_snapshot
from tests.helpers import FIRST, HEAD, prepare

FOREIGN = "f0f0f0f0f0f0"  # a revision of a branch this checkout does not have
BRANCH = (
    "b0b0b0b0b0b0"  # the second head of a branched script copy (revises FIRST, changes nothing)
)
SETTINGS = settings_from_mapping(DEFAULTS)


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
        # What the runner would be told: the task's declared guard, lowered by its flags.
        flags = ("assume_yes", "lock_timeout", "offline", "read_only")
        how = {key: bound.arguments[key] for key in flags}
        spec = task_context.task_spec(bound.arguments["collection"], bound.arguments["task"], **how)
        captured.update(vars(spec))

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
    assert captured, f"{task.name} does not run through tasks.cli.context.run_task"
    return captured


@cache
def discover() -> tuple[TaskInfo, ...]:
    namespace = build_namespace()
    found = []
    for collection_name, collection in sorted(namespace.collections.items()):
        if (
            collection_name == "fleet"
        ):  # run_command: each target is guarded (tests/fleet/test_fleet.py)
            continue
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
    return tuple(found)


# --- databases in known states ------------------------------------------------------------------


class States:
    """Module databases in known states: `head`, `first`, `foreign` (at head, but recording a
    revision of another branch) and `branches` (at both heads of a branched script copy), on
    PostgreSQL or in a SQLite file. Checked before each test and
    rebuilt when a test changed one; a test that proves its database unchanged (`unchanged`)
    spares the next one the check."""

    def __init__(self, pg_server: Any, directory: Path) -> None:
        self.pg_server = pg_server
        self.directory = directory  # SQLite files and backups
        self.urls: dict[tuple[str, str], str] = {}
        self.snapshots: dict[tuple[str, str], dict] = {}
        self.clean: set[tuple[str, str]] = set()  # proved unchanged by the last test
        self.backups: dict[str, Path] = {}

    def ready(self, state: str, project: Any, backend: str = "postgresql") -> str:
        key = (backend, state)
        if key not in self.urls:
            name = f"t_hostile_{state}_{uuid.uuid4().hex[:8]}"
            if backend == "sqlite":
                self.urls[key] = f"sqlite:///{self.directory / name}.sqlite3"
            else:
                self.urls[key] = create_pg_database(self.pg_server, name)
        url = self.urls[key]
        if key not in self.clean and (
            key not in self.snapshots or schema_snapshot(url) != self.snapshots[key]
        ):
            _empty(url)
            prepare(project, url, FIRST if state == "first" else HEAD)
            if state == "foreign":
                _execute(url, f"UPDATE alembic_version SET version_num = '{FOREIGN}'")
            if state == "branches":  # at both heads of the branched copy: HEAD and BRANCH
                _execute(url, f"INSERT INTO alembic_version (version_num) VALUES ('{BRANCH}')")
            self.snapshots[key] = schema_snapshot(url)
        self.clean.add(key)
        return url

    def forget(self, state: str, backend: str = "postgresql") -> None:
        """From here on the database may change: check it before the next test uses it."""
        self.clean.discard((backend, state))

    def unchanged(self, state: str, backend: str = "postgresql") -> bool:
        """Whether the state's database is as prepared; until proved, it is checked again."""
        key = (backend, state)
        self.clean.discard(key)
        if schema_snapshot(self.urls[key]) != self.snapshots[key]:
            return False
        self.clean.add(key)
        return True

    def backup_file(self, project: Any, backend: str = "postgresql") -> Path:
        """A backup of the `first` state (restoring it over `head` would show), written the way
        the tasks write them: pg_dump's custom format, or a SQLite file."""
        if backend not in self.backups:
            url = self.ready("first", project, backend)
            parsed = sqlalchemy.engine.make_url(url)
            if backend == "sqlite":
                path = self.directory / "first-backup.sqlite3"
                source, copy = sqlite3.connect(parsed.database), sqlite3.connect(path)
                try:
                    source.backup(copy)
                finally:
                    source.close()
                    copy.close()
            else:
                path = self.directory / "first.dump"
                libpq = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
                dump = ["pg_dump", "--format=custom", f"--file={path}", "--no-password", libpq]
                subprocess.run(dump, check=True, capture_output=True)
            self.backups[backend] = path
        return self.backups[backend]

    def drop(self) -> None:
        for (backend, _state), url in self.urls.items():
            if backend == "postgresql":
                drop_pg_database(self.pg_server, sqlalchemy.engine.make_url(url).database)


def _execute(url: str, statement: str) -> None:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            for part in statement.split(";"):
                connection.execute(sqlalchemy.text(part))
    finally:
        engine.dispose()


def _empty(url: str) -> None:
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        Path(parsed.database).unlink(missing_ok=True)
    else:
        _execute(url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
