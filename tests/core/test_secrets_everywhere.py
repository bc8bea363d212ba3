"""A password planted in every URL variable never appears anywhere a task writes: stdout, stderr
(`--sql` output included), the JSON run log, the audit table, backup file names, the backups
themselves and what `pg_restore --list` shows of them, revision files, or any other file the run
leaves behind. Every task of every collection (discovered, see tests/task_matrix.py) runs once in
a success path and once in a failure path (its database does not exist), and again with each
flag that changes what it prints (`--sql`, offline; `--json`, `--verbose`, `--graph`).

Each variable holds its own password (production's needs URL-quoting), and every spelling of
every one is searched for, so a task that leaked another environment's password would show. The
local PostgreSQL trusts local connections: a URL with a password connects, and the password is
only there to be leaked. The redaction registry is emptied before each run, as in a fresh
process, so a password registered by an earlier test cannot hide a leak in a later one.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy

from tasks.core import redaction
from tasks.core.errors import ExitCode
from tests.conftest import Result, create_pg_database, drop_pg_database
from tests.helpers import FIRST, HEAD, SECRET, copy_scripts, prepare
from tests.task_matrix import SETTINGS, States, TaskInfo, discover

pytestmark = pytest.mark.postgres

CI_VARIABLE = "INVOKE_MIGRATIONS_CI_POSTGRES_URL"
PASSWORDS = {
    "DATABASE_URL_LOCAL": f"{SECRET}Lo",
    "DATABASE_URL_DEVELOPMENT": f"{SECRET}Dv",
    "DATABASE_URL_STAGING": f"{SECRET}St",
    "DATABASE_URL_PRODUCTION": "S3cr@t:/pw%?#Pr",
    CI_VARIABLE: f"{SECRET}Ci",
}
SPELLINGS = sorted(
    {
        spelling
        for password in PASSWORDS.values()
        for spelling in (password, quote(password, safe=""), quote(password), quote_plus(password))
    }
)

TASKS = discover()


# Flags that change what a task prints: each gets a run of its own.
OUTPUT_FLAGS = ("sql", "json", "verbose", "graph")


@dataclass(frozen=True)
class Run:
    task: TaskInfo
    path: str  # success, failure
    flag: str | None = None  # one of OUTPUT_FLAGS
    style: str = "userinfo"  # where the URL carries the password: user:PASSWORD@ or ?password=

    @property
    def id(self) -> str:
        flag = f"-{self.flag}" if self.flag else ""
        style = "" if self.style == "userinfo" else f"-{self.style}"
        return f"{self.task.full}{flag}{style}-{self.path}"

    @property
    def sql(self) -> bool:
        return self.flag == "sql"

    @property
    def state(self) -> str:
        """What the database must be at before the run for the success path to do something."""
        if self.sql:
            return "head"
        return "first" if self.task.name in {"upgrade", "sync"} else "head"

    @property
    def private_database(self) -> bool:
        """A run that changes its database gets one of its own; the others share one."""
        return self.path == "success" and not self.sql and self.task.changes_database


def _runs() -> list[Run]:
    runs = [
        Run(t, path, flag)
        for t in TASKS
        for path in ("success", "failure")
        for flag in (None, *(flag for flag in OUTPUT_FLAGS if flag in t.params))
    ]
    # libpq (and so psycopg2) also takes the password as a query parameter
    return runs + [Run(t, path, style="query") for t in TASKS for path in ("success", "failure")]


RUNS = _runs()


def with_password(url: str, password: str, style: str = "userinfo", **changes: Any) -> str:
    parsed = sqlalchemy.engine.make_url(url).set(**changes)
    rendered = parsed.set(password=None, drivername="postgresql").render_as_string(
        hide_password=False
    )
    if style == "query":
        separator = "&" if "?" in rendered else "?"
        return f"{rendered}{separator}password={quote(password, safe='')}"
    scheme, rest = rendered.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{quote(password, safe='')}@{host}"


def argv_for(run: Run, backup_file: Path) -> list[str]:
    t = run.task
    argv = [t.full]
    params = t.params
    if run.sql:
        rev = {"downgrade": f"{HEAD}:{FIRST}", "stamp": "head"}.get(t.name)
        return [*argv, "--sql", *(["--rev", rev] if rev else [])]
    if run.flag:
        argv.append(f"--{run.flag}")
    if params.get("rev") == "":  # downgrade, stamp: one step below head
        argv += ["--rev", FIRST]
    if "message" in params:
        argv += ["--message", "secrets everywhere"]
    if "accept_edit" in params:  # repair: what to repair, and why
        argv += ["--accept-edit", "--reason", "secrets everywhere"]
    if "file" in params:
        argv += ["--file", str(backup_file)]
    if params.get("backup") is False:  # exercise the backup's name and content too
        argv.append("--backup")
    if "yes" in params:
        argv.append("--yes")
    return argv


@pytest.fixture(scope="module")
def states(pg_server, tmp_path_factory) -> Iterator[States]:
    prepared = States(pg_server, tmp_path_factory.mktemp("secrets-databases"))
    yield prepared
    prepared.drop()


def _leaks(text: str) -> list[str]:
    return [spelling for spelling in SPELLINGS if spelling in text]


def _audit_rows(url: str) -> list[dict]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            if not sqlalchemy.inspect(connection).has_table("migration_audit"):
                return []
            rows = connection.execute(sqlalchemy.text("SELECT * FROM migration_audit"))
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def _files_under(root: Path) -> Iterator[Path]:
    yield from (path for path in root.rglob("*") if path.is_file())


def _pg_restore_list(path: Path) -> str:
    listed = subprocess.run(
        ["pg_restore", "--list", str(path)], capture_output=True, text=True, check=False
    )
    return listed.stdout + listed.stderr


@pytest.mark.parametrize("run", RUNS, ids=[run.id for run in RUNS])
def test_no_password_anywhere(project, states, pg_server, run: Run):
    scripts = copy_scripts(project.tmp / "scripts")  # `revision` writes here, never in the repo
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(scripts.ini))
    project.setenv("EDITOR", "true")  # `edit` opens the file in an editor that does nothing
    backup_file = states.backup_file(project)
    private = None
    if run.private_database:
        private = f"t_secrets_{uuid.uuid4().hex[:8]}"
        url = create_pg_database(pg_server, private)
        prepare(project, url, FIRST if run.state == "first" else HEAD)
    else:
        url = states.ready(run.state, project)
    try:
        database = sqlalchemy.engine.make_url(url).database
        if run.path == "failure":
            database = f"t_missing_{uuid.uuid4().hex[:8]}"
        for variable, password in PASSWORDS.items():
            if variable == CI_VARIABLE:
                target = "postgres" if run.path == "success" else database
                planted = with_password(url, password, run.style, database=target)
                project.setenv(variable, planted)
            else:
                # Other environments elsewhere on the server: on the run's own database they
                # would be refused (test_scope); their passwords are planted all the same.
                target = database if variable == run.task.url_variable else f"{database}_other"
                planted = with_password(url, password, run.style, database=target)
                project.setenv(variable, planted)
        project.monkeypatch.setattr(redaction, "_secrets", set())

        result = project.invoke(*argv_for(run, backup_file))

        _assert_path_taken(run, result)
        _assert_no_password(project, result, url)
    finally:
        if private is not None:
            drop_pg_database(pg_server, private)


def _assert_path_taken(run: Run, result: Result) -> None:
    """The run went where it was sent: the success path succeeded, the failure path failed to
    connect (offline SQL needs no connection, and `heads` no database)."""
    assert "Traceback" not in result.output, result.output
    assert "unexpected error" not in result.stderr, result.stderr
    connects = run.task.needs_database or run.task.collection == "ci"
    failing = run.path == "failure" and not run.sql and connects
    expected = ExitCode.FAILED if failing else ExitCode.OK
    assert result.code == expected, f"exit {result.code}, expected {expected}:\n{result.output}"
    if failing:
        assert "t_missing_" in result.stderr, result.stderr


def _assert_no_password(project, result: Result, url: str) -> None:  # type: ignore[no-untyped-def]
    """Console, then every file the run may have written (log, backups, revisions, anything
    else in the test's directory): names, contents, and a dump's table of contents."""
    assert not _leaks(result.stdout), f"password in stdout:\n{result.stdout}"
    assert not _leaks(result.stderr), f"password in stderr:\n{result.stderr}"
    for path in _files_under(project.tmp):
        assert not _leaks(str(path)), f"password in a file name: {path}"
        assert not _leaks(path.read_bytes().decode("utf-8", "replace")), f"password in {path}"
        if path.suffix == ".dump":
            assert not _leaks(_pg_restore_list(path)), f"password in {path}'s table of contents"
    for row in _audit_rows(url):
        assert not _leaks(repr(row)), f"password in an audit row: {row}"


def test_every_variable_is_planted():
    """The passwords cover every environment's variable, and ci.check's server."""
    variables = {env.url_variable for env in SETTINGS.environments.values()}
    assert set(PASSWORDS) == variables | {CI_VARIABLE}


def test_changes_to_shared_databases_are_audited(project, states, pg_server):
    """The audit check above is not vacuous: a change to a shared database leaves rows."""
    name = f"t_secrets_{uuid.uuid4().hex[:8]}"
    url = create_pg_database(pg_server, name)
    try:
        prepare(project, url, FIRST)
        project.setenv(
            "DATABASE_URL_STAGING", with_password(url, PASSWORDS["DATABASE_URL_STAGING"])
        )
        project.monkeypatch.setattr(redaction, "_secrets", set())

        result = project.invoke("staging.upgrade")

        assert result.code == ExitCode.OK, result.output
        rows = [row for row in _audit_rows(url) if row["task"] == "staging.upgrade"]
        assert rows and rows[-1]["outcome"] == "ok"
        assert not _leaks(repr(rows))
    finally:
        drop_pg_database(pg_server, name)
