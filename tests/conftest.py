"""Shared fixtures: throwaway databases on the real servers (tests/pg_databases.py), an isolated
project environment, and ways to run tasks the way users do: Invoke's Program in-process, a
process of its own forked from a server that has the libraries imported (tests/fork_server.py),
or a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fork_server import LIBRARIES, ForkServer
from tests.pg_databases import PgDatabases

if TYPE_CHECKING:
    from tests.revision_chains import Chain

ROOT = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN_URL = os.environ.get("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

# Variables a developer's shell may carry that would steer the tasks away from test databases.
ISOLATED_PREFIXES = ("DATABASE_URL_", "INVOKE_MIGRATIONS_", "MIGRATIONS_")
ISOLATED_NAMES = ("ENVIRONMENT",)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _program():  # -> invoke.Program
    """Invoke's Program, loading `tasks.py` and building its parser contexts once per process.

    Every `Program.run` re-executes `tasks.py`, rebuilds the 72 tasks' parser contexts and
    deep-copies all of them to parse one command line: about 40 ms of CPU a run, which over the
    suite's ~3,000 in-process runs was more CPU than the tasks themselves. The namespace does not
    depend on the environment (tasks.core.settings.COLLECTIONS is fixed), Invoke copies a
    context before parsing into it, and the project configuration (invoke.yaml) is still loaded
    on every run, so each run parses and executes exactly as a fresh process would. Runs in a
    fresh process (`Project.invoke_subprocess`) keep Invoke's own path.
    """
    global _PROGRAM_CLASS
    if _PROGRAM_CLASS is None:
        _PROGRAM_CLASS = _cached_program_class()
    return _PROGRAM_CLASS(name="invoke", binary="invoke")


_PROGRAM_CLASS = None


def _cached_program_class():
    from invoke import Program
    from invoke.parser import Parser

    loaded: dict[tuple, tuple] = {}
    contexts: dict[tuple, list] = {}

    class CachedProgram(Program):
        def load_collection(self) -> None:
            key = (self.args["search-root"].value, self.args.collection.value)
            if key not in loaded:
                super().load_collection()
                loaded[key] = (self.collection, self.config._project_prefix)
                return
            collection, prefix = loaded[key]
            self.config.set_project_location(prefix)
            self.config.load_project()
            self.collection = collection

        def _make_parser(self) -> Parser:
            key = (id(self.collection), self.config.tasks.ignore_unknown_help)
            if key not in contexts:
                contexts[key] = self.collection.to_contexts(ignore_unknown_help=key[1])
            named = set(self.argv)  # `--help TASK` takes the name as the core flag's value
            wanted = [  # only the tasks this command line names: the rest is never entered
                context
                for context in contexts[key]
                if context.name in named or named.intersection(context.aliases)
            ]
            return Parser(initial=self.initial_context, contexts=wanted)

    return CachedProgram


@dataclass
class Project:
    """The repository as a user's shell sees it, with logs, backups and .env files in tmp."""

    tmp: Path
    log_file: Path
    backup_dir: Path
    dotenv_dir: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def setenv(self, name: str, value: str) -> None:
        self.monkeypatch.setenv(name, value)

    def invoke(self, *argv: str) -> Result:
        """Run `invoke ARGV...` in-process through Invoke's own Program, as the CLI does."""
        self.capsys.readouterr()
        code = 0
        try:
            _program().run(["invoke", "--search-root", str(ROOT), *argv], exit=True)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def invoke_alone(self, *argv: str) -> Result:
        """`invoke` with only the task's own environment's URL variable set.

        The scope rule refuses a task whose database another configured environment also names
        (`local.sync` on the database DATABASE_URL_DEVELOPMENT points at): tests comparing one
        database through `dev.check` and `local.sync` hide the other variables while each runs.
        """
        collection = next(arg for arg in argv if "." in arg and not arg.startswith("-"))
        own = {"local": "LOCAL", "dev": "DEVELOPMENT", "staging": "STAGING", "prod": "PRODUCTION"}
        mine = f"DATABASE_URL_{own.get(collection.split('.')[0], '')}"
        hidden = {
            name: os.environ[name]
            for name in (f"DATABASE_URL_{suffix}" for suffix in own.values())
            if name != mine and name in os.environ
        }
        for name in hidden:
            self.monkeypatch.delenv(name)
        try:
            return self.invoke(*argv)
        finally:
            for name, value in hidden.items():
                self.monkeypatch.setenv(name, value)

    def run(self, *argv: str, input: str | None = None, timeout: float = 300) -> Result:
        """Run a command in a subprocess from the repository root with this environment."""
        return subprocess_result(argv, dict(os.environ), input or "", timeout)

    def invoke_subprocess(self, *argv: str, input: str | None = None) -> Result:
        """`invoke ARGV...` in a process of its own (forked from one that has imported the
        libraries, see tests/fork_server.py), with this environment."""
        return python_command(sys.executable, "-m", "invoke", *argv, input=input or "")

    def log_records(self) -> list[dict]:
        import json

        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line]


def subprocess_result(
    argv: Sequence[str], env: dict[str, str], input: str, timeout: float
) -> Result:
    """ARGV in a real subprocess from the repository root."""
    completed = subprocess.run(list(argv), cwd=ROOT, env=env, input=input, capture_output=True,
                               text=True, timeout=timeout, check=False)  # fmt: skip
    return Result(completed.returncode, completed.stdout, completed.stderr)


_fork_servers: dict[tuple[str, tuple[str, ...]], ForkServer] = {}


def python_command(
    python: str | Path, *argv: str, modules: tuple[str, ...] = (), input: str = "",
    timeout: float = 600,
) -> Result:  # fmt: skip
    """`PYTHON ARGV...` (-m or -c) from the repository root with this process's environment, in
    a process forked from a server that imported the libraries and MODULES beforehand; a real
    subprocess when the environment changes what the interpreter's start-up decides."""
    env = dict(os.environ)
    key = (str(python), modules)
    if key not in _fork_servers:
        _fork_servers[key] = ForkServer(str(python), (*LIBRARIES, *modules))
    server = _fork_servers[key]
    if not server.accepts(env):
        return subprocess_result([str(python), *argv], env, input, timeout)
    code, stdout, stderr = server.run(argv, cwd=str(ROOT), env=env, input=input, timeout=timeout)
    return Result(code, stdout, stderr)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Iterator[Project]:
    for name in list(os.environ):
        if name.startswith(ISOLATED_PREFIXES) or name in ISOLATED_NAMES:
            monkeypatch.delenv(name)
    dotenv_dir = tmp_path / "dotenv"
    dotenv_dir.mkdir()
    log_file = tmp_path / "logs" / "migrations.jsonl"
    backup_dir = tmp_path / "backups"
    monkeypatch.setenv("INVOKE_MIGRATIONS_LOG_FILE", str(log_file))
    monkeypatch.setenv("INVOKE_MIGRATIONS_BACKUP_DIR", str(backup_dir))
    monkeypatch.setenv("INVOKE_MIGRATIONS_DOTENV_DIR", str(dotenv_dir))
    monkeypatch.setenv("MIGRATIONS_OPERATOR", "tester@example.com")
    # The local default is a file in the repository; tests never touch it.
    monkeypatch.setenv("DATABASE_URL_LOCAL", f"sqlite:///{tmp_path / 'local.sqlite3'}")
    monkeypatch.chdir(ROOT)
    yield Project(tmp_path, log_file, backup_dir, dotenv_dir, monkeypatch, capsys)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.sqlite3'}"


@pytest.fixture
def existing_sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite database that exists: reads (plan, history) never create one."""
    import sqlite3

    path = tmp_path / "test.sqlite3"
    sqlite3.connect(path).close()
    return f"sqlite:///{path}"


@pytest.fixture
def users_chain(project: Project) -> Chain:
    """One revision that creates a table `users` (and drops it), in a throwaway scripts folder."""
    from tests.revision_chains import empty_chain  # it imports this module

    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        "b00000000001",
        "users",
        'op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("users")',
        record=False,
    )
    return chain


def _server_or_skip(admin_url: str, what: str, *, required_in_ci: bool):
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect():
            pass
    except Exception as error:
        engine.dispose()
        message = f"{what} is not reachable at {admin_url}: {type(error).__name__}"
        if IN_CI and required_in_ci:
            pytest.fail(message)
        pytest.skip(message)
    return engine


class _MySQLDrops:
    """MariaDB's DROP DATABASE waits for every table's files and metadata locks; a test need
    not wait for it. Each test's database is dropped in a thread, all of them before the end."""

    def __init__(self, admin_url: str) -> None:
        import queue
        import threading

        import sqlalchemy

        self._engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self._names: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="mysql-drops", daemon=True)
        self._thread.start()

    def release(self, name: str) -> None:
        self._names.put(name)

    def close(self) -> None:
        self._names.put(None)
        self._thread.join(timeout=120)
        self._engine.dispose()

    def _serve(self) -> None:
        while (name := self._names.get()) is not None:
            try:
                with self._engine.connect() as connection:
                    connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
            except Exception:  # noqa: S112 - one failed drop must not stop the others
                continue


def _throwaway_name(request: pytest.FixtureRequest) -> str:
    module = request.module.__name__.rsplit(".", 1)[-1]
    return f"t_{module}_{uuid.uuid4().hex[:8]}".lower()


@pytest.fixture(scope="module")
def pg_server():
    """An admin engine on the PostgreSQL server; PostgreSQL tests fail instead of skipping in CI."""
    engine = _server_or_skip(POSTGRES_ADMIN_URL, "PostgreSQL", required_in_ci=True)
    yield engine
    engine.dispose()


_made_ahead: PgDatabases | None = None


def _databases() -> PgDatabases:
    global _made_ahead
    if _made_ahead is None:
        _made_ahead = PgDatabases(POSTGRES_ADMIN_URL)
    return _made_ahead


_mysql_drops: _MySQLDrops | None = None


def pytest_sessionfinish(session: pytest.Session) -> None:
    for background in (_made_ahead, _mysql_drops, *_fork_servers.values()):
        if background is not None:
            background.close()


def create_pg_database(pg_server, name: str) -> str:
    """A new empty database NAME on the server (made ahead or recycled, see tests/pg_databases)."""
    _databases().take(name)
    return pg_server.url.set(database=name).render_as_string(hide_password=False)


def drop_pg_database(pg_server, name: str) -> None:
    """Recycled or dropped in the background; the name is never used again (a fresh suffix
    each time)."""
    _databases().release(name)


@pytest.fixture(scope="module")
def pg_module_url(request: pytest.FixtureRequest, pg_server) -> Iterator[str]:
    """A PostgreSQL database for the whole test module, dropped afterwards."""
    name = _throwaway_name(request)
    yield create_pg_database(pg_server, name)
    drop_pg_database(pg_server, name)


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, pg_server) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = _throwaway_name(request)
    yield create_pg_database(pg_server, name)
    drop_pg_database(pg_server, name)


@pytest.fixture
def mysql_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh MariaDB/MySQL database for one test; skipped when the server is not reachable."""
    import sqlalchemy

    engine = _server_or_skip(MYSQL_ADMIN_URL, "MariaDB/MySQL", required_in_ci=False)
    name = _throwaway_name(request)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE `{name}`"))
    yield engine.url.set(database=name).render_as_string(hide_password=False)
    engine.dispose()
    global _mysql_drops
    if _mysql_drops is None:
        _mysql_drops = _MySQLDrops(MYSQL_ADMIN_URL)
    _mysql_drops.release(name)


@pytest.fixture(params=["sqlite", "postgresql", pytest.param("mysql", marks=pytest.mark.mysql)])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each dialect the project supports (MariaDB only where reachable)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'local.sqlite3'}"
    if request.param == "mysql":
        return request.getfixturevalue("mysql_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture(params=["postgresql", "sqlite"])
def dev_on_both(request: pytest.FixtureRequest, project: Project) -> str:
    """DATABASE_URL_DEVELOPMENT set to a fresh PostgreSQL database, then to a SQLite file."""
    url = (
        request.getfixturevalue("pg_url")
        if request.param == "postgresql"
        else f"sqlite:///{project.tmp / 'dev.sqlite3'}"
    )
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    return url


TOOL_BOOKKEEPING = {"migration_audit", "migration_checksums", "migration_progress"}


def schema_snapshot(url: str) -> dict:
    """Tables, columns, indexes and alembic_version of a database, to prove nothing changed.

    The audit table is left out: recording a refused or failed attempt is the one write a
    refusal is supposed to make (tasks/guard/audit.py). So is the checksum table: a run that
    got past its checks records the applied revisions' checksums before the first revision
    runs, also when that revision then fails (tasks/history/checksums.py). So is the bookkeeping
    of revisions that did not finish (tasks/guard/revision_progress.py).
    """
    import sqlalchemy

    if sqlalchemy.make_url(url).get_backend_name() == "postgresql":
        return _postgresql_snapshot(url)
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            inspector = sqlalchemy.inspect(connection)
            snapshot: dict = {}
            for table in sorted(set(inspector.get_table_names()) - TOOL_BOOKKEEPING):
                columns = [
                    (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
                ]
                indexes = sorted(i["name"] or "" for i in inspector.get_indexes(table))
                snapshot[table] = {"columns": columns, "indexes": indexes}
            if "alembic_version" in snapshot:
                rows = connection.execute(
                    sqlalchemy.text("SELECT version_num FROM alembic_version")
                )
                snapshot["alembic_version"]["rows"] = sorted(row[0] for row in rows)
            return snapshot
    finally:
        engine.dispose()


_PG_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
ORDER BY c.relname, a.attnum
"""
_PG_INDEXES = """
SELECT t.relname, i.relname
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = current_schema() AND t.relkind IN ('r', 'p') AND NOT x.indisprimary
"""


def _postgresql_snapshot(url: str) -> dict:
    """schema_snapshot on PostgreSQL: the same tables, columns (PostgreSQL's type names),
    index names (the primary key's left out, as SQLAlchemy's inspector does) and version rows,
    read by two catalog queries on one plain connection. The inspector's per-table queries
    and a new engine's first-connect checks made this a tenth of a typical test's CPU time,
    and the matrix and the secrets tests take two snapshots per case."""
    import psycopg2
    import sqlalchemy

    parsed = sqlalchemy.make_url(url)
    connection = psycopg2.connect(
        host=parsed.host, port=parsed.port or 5432, user=parsed.username,
        password=parsed.password, dbname=parsed.database,
    )  # fmt: skip
    try:
        with connection.cursor() as cursor:
            snapshot: dict = {}
            cursor.execute(_PG_COLUMNS)
            for table, column, type_, nullable in cursor.fetchall():
                if table not in TOOL_BOOKKEEPING:
                    entry = snapshot.setdefault(table, {"columns": [], "indexes": []})
                    entry["columns"].append((column, type_, nullable))
            cursor.execute(_PG_INDEXES)
            for table, index in cursor.fetchall():
                if table in snapshot:
                    snapshot[table]["indexes"].append(index)
            for entry in snapshot.values():
                entry["indexes"].sort()
            if "alembic_version" in snapshot:
                cursor.execute("SELECT version_num FROM alembic_version")
                snapshot["alembic_version"]["rows"] = sorted(row[0] for row in cursor.fetchall())
            return dict(sorted(snapshot.items()))
    finally:
        connection.close()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests run with the same parameters share one worker (`--dist loadgroup`), so an
    expensive session fixture (a real application's virtualenv) is built once, and the groups
    are handed out first, so the longest work does not start last."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if item.get_closest_marker("slow") and callspec is not None:
            group = f"{item.module.__name__ if item.module else ''}[{callspec.id}]"
            item.add_marker(pytest.mark.xdist_group(group))
