"""Issue 11, items 7 and 8: hostile input that reached the wrong place.

Revision messages land in the new file only as data; configuration booleans, backups, pipes and
models modules that exit fail the documented way (one line, the right exit code).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tasks.core.errors import ExitCode
from tests.helpers import (
    FIRST,
    HEAD,
    SECRET,
    assert_ok,
    assert_one_line_error,
    copy_scripts,
    prepare,
    sqlite_url,
    venv_bin,
)

# --- item 7: hostile revision messages ----------------------------------------------------------


def _payload(sentinel: Path) -> str:
    """Code that, if the message ever leaves the docstring, leaves a file behind."""
    return f'"""\nimport pathlib\npathlib.Path({str(sentinel)!r}).write_text("ran")\n"""'


def _messages(sentinel: Path) -> dict[str, str]:
    return {
        "quotes": "it's \"quoted\" and 'single'",
        "backslashes": "C:\\new\\table \\N{BULLET} \\x41 \\u00e9 ends with \\",
        "newlines": "first line\nRevision ID: deadbeef0000\r\nRevises: nothing\n\n",
        "triple double": 'before """ after',
        "triple single": "before ''' after",
        "mako": "${__import__('os').system('false')} <%text>x</%text> % if x:",
        "code": _payload(sentinel),
        "control": "nul\x00 bell\x07 tab\t line\u2028separator",
        "long": "x" * 10_000 + ' """ ' + "y" * 300,
        "ends in a quote": 'the message ends with "',
    }


@pytest.fixture
def scripts(project):
    copy = copy_scripts(project.tmp / "scripts")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    return copy


def _import(path: Path):
    """Import a revision file the way Alembic does: as a module from its path."""
    spec = importlib.util.spec_from_file_location(f"revision_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _new_file(scripts, before: set[str]) -> Path:
    created = scripts.files() - before
    assert len(created) == 1, created
    return scripts.versions / created.pop()


def test_hostile_messages_land_in_the_file_as_data(project, scripts) -> None:
    """Each message: the task succeeds, the file imports, its docstring starts with the exact
    message, no code ran, and every later task (heads, current) still loads the scripts."""
    url = prepare(project, sqlite_url(project.tmp / "dev.sqlite3"), HEAD)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    sentinel = project.tmp / "code-ran"
    for name, message in _messages(sentinel).items():
        before = scripts.files()
        result = project.invoke("dev.revision", "-m", message)
        assert_ok(result)
        path = _new_file(scripts, before)
        module = _import(path)
        assert module.__doc__.startswith(message + "\n\nRevision ID: "), name
        assert module.revision in path.name
        assert not sentinel.exists(), name
        assert_ok(project.invoke("dev.heads"))
        assert_ok(project.invoke("dev.current"))
        assert not sentinel.exists(), name
        # Each new revision is the head: the next one revises it, so all of them are loaded.
        assert_ok(project.invoke("dev.stamp", "--rev", "head", "--yes"))


def test_plain_alembic_revision_uses_the_same_escaping(project, scripts) -> None:
    sentinel = project.tmp / "code-ran"
    before = scripts.files()
    result = project.run(
        venv_bin("alembic"), "-c", str(scripts.ini), "revision", "-m", _payload(sentinel)
    )
    assert result.code == 0, result.output
    path = _new_file(scripts, before)
    assert _import(path).__doc__.startswith(_payload(sentinel))
    assert not sentinel.exists()


NAIVE_TEMPLATE = '''"""${message}

Revision ID: ${up_revision}
"""
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
'''


@pytest.mark.parametrize("message", ['a """ b', 'x"""\nimport os\n"""'], ids=["breaks", "code"])
def test_a_template_that_does_not_escape_writes_nothing(project, scripts, message) -> None:
    """A team's own script.py.mako without escaping: the task deletes what it wrote and says so
    in one line, so the scripts keep loading (they used to fail with SyntaxError everywhere)."""
    (scripts.ini.parent / "alembic" / "script.py.mako").write_text(NAIVE_TEMPLATE)
    url = prepare(project, sqlite_url(project.tmp / "dev.sqlite3"), HEAD)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    before = scripts.files()
    result = project.invoke("dev.revision", "-m", message)
    assert_one_line_error(result, ExitCode.USAGE, "dev.revision:", "no revision written")
    assert scripts.files() == before
    assert_ok(project.invoke("dev.heads"))


def test_python_sees_the_repository_template_render_valid_python() -> None:
    """The template itself, rendered the way Alembic renders it, for the awkward characters."""
    from alembic.script import write_hooks  # noqa: F401 - Alembic's own imports for the template
    from alembic.util import format_as_comma
    from mako.template import Template

    from tests.conftest import ROOT

    template = Template(filename=str(ROOT / "alembic" / "script.py.mako"))  # noqa: S702
    for message in ["\\", '"', '\\"""', "\udc80", "\x00", "a\rb"]:
        source = template.render(
            message=message,
            comma=format_as_comma,
            up_revision="abc",
            down_revision=None,
            branch_labels=None,
            depends_on=None,
            create_date="2026-12-01",
            imports="",
            upgrades="",
            downgrades="",
        )
        namespace: dict = {}
        exec(compile(source, "revision.py", "exec"), namespace)  # noqa: S102 - our own template
        assert namespace["__doc__"].startswith(message + "\n"), repr(message)


def test_make_revision_keeps_msg_as_data(project, scripts) -> None:
    """`make revision MSG="$PR_TITLE"`: make used to expand $(shell ...) in MSG and paste the
    rest into a shell command line (quotes, backticks); now MSG reaches the task untouched."""
    url = prepare(project, sqlite_url(project.tmp / "dev.sqlite3"), HEAD)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", "tests.models_changed:metadata")
    sentinel = project.tmp / "make-ran"
    message = f'$(shell touch {sentinel}) "$$(touch {sentinel})" `touch {sentinel}` it\'s """'
    before = scripts.files()
    # -o: never rebuild the virtualenv from a test, whatever the requirements' timestamps say.
    result = project.run("make", "-o", ".venv/.runtime", "revision", f"MSG={message}")
    assert result.code == 0, result.output
    assert not sentinel.exists()
    assert _import(_new_file(scripts, before)).__doc__.startswith(message + "\n")


# --- item 8: MySQL ?password= reaches the dump tools --------------------------------------------


@pytest.fixture
def mysql_user_url(mysql_url: str):
    """The test database through its own user, whose password is only in `?password=`."""
    import uuid

    import sqlalchemy

    admin = sqlalchemy.create_engine(mysql_url, isolation_level="AUTOCOMMIT")
    user, database = f"u_{uuid.uuid4().hex[:10]}", sqlalchemy.engine.make_url(mysql_url).database
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{SECRET}'"))
        connection.execute(sqlalchemy.text(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
    url = sqlalchemy.engine.make_url(mysql_url)
    yield f"mysql://{user}@{url.host}:{url.port or 3306}/{database}?password={SECRET}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP USER IF EXISTS '{user}'@'%'"))
    admin.dispose()


@pytest.mark.mysql
def test_mysql_password_parameter_reaches_the_dump_and_restore_tools(project, mysql_user_url):
    """It migrated (PyMySQL reads ?password=) but mariadb-dump logged in without a password."""
    project.setenv("DATABASE_URL_LOCAL", mysql_user_url)
    assert_ok(project.invoke("local.upgrade"))
    backup = project.invoke("local.backup")
    assert_ok(backup)
    (path,) = project.backup_dir.iterdir()
    assert b"-- Dump completed" in path.read_bytes()[-4096:]
    assert_ok(project.invoke("local.restore", "--file", str(path), "--yes"))
    for text in (backup.output, path.name, project.log_file.read_text()):
        assert SECRET not in text


# --- item 8: a backup folder the tool cannot use is a configuration error ---------------------


def _unprivileged(argv: list[str]) -> list[str]:
    """Root writes anywhere: run as nobody, the way an operator meets a read-only folder."""
    import os
    import shutil

    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a folder's mode cannot stop root")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]


@pytest.fixture
def open_workspace():
    """A folder every user may write (pytest's tmp_path is private to its owner)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="hardening-"))
    folder.chmod(0o777)
    yield folder
    for path in folder.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("mode", [0o444, 0o000, 0o555], ids=["r--", "---", "r-x"])
def test_unusable_backup_folder_is_a_configuration_error(project, open_workspace, mode) -> None:
    """Exit 2 and one line naming the folder, as for a folder that cannot be created; it was
    `unexpected error` (exit 1) when the folder could not even be searched."""
    database = open_workspace / "local.sqlite3"
    project.setenv("DATABASE_URL_LOCAL", sqlite_url(database))
    assert_ok(project.invoke("local.sync"))
    database.chmod(0o666)
    logs = open_workspace / "logs"
    logs.mkdir(mode=0o777)
    logs.chmod(0o777)
    backups = open_workspace / "backups"
    backups.mkdir()
    backups.chmod(mode)
    project.setenv("INVOKE_MIGRATIONS_LOG_FILE", str(logs / "migrations.jsonl"))
    project.setenv("INVOKE_MIGRATIONS_BACKUP_DIR", str(backups))
    project.setenv("HOME", str(open_workspace))  # nobody may not read root's ~/.invoke.yaml
    # .env files nobody cannot read would hide production's URL: the scope check refuses then.
    project.setenv("INVOKE_MIGRATIONS_DOTENV_DIR", str(open_workspace))

    result = project.run(*_unprivileged([sys.executable, "-m", "invoke", "local.backup"]))

    assert_one_line_error(result, ExitCode.USAGE, "local.backup: ", str(backups))
    backups.chmod(0o755)
    assert list(backups.iterdir()) == []


def test_a_database_name_too_long_for_a_file_name_still_backs_up(project, tmp_path) -> None:
    """The backup's name embeds the database's: 228 characters made an OSError (exit 1)."""
    database = tmp_path / ("d" * 228 + ".sqlite3")  # its lock file name still fits
    project.setenv("DATABASE_URL_LOCAL", sqlite_url(database))
    assert_ok(project.invoke("local.sync"))
    assert_ok(project.invoke("local.backup"))
    (path,) = project.backup_dir.iterdir()
    assert len(path.name) < 255


# --- item 8: --sql --rev with two colons is bad input -------------------------------------------


@pytest.mark.parametrize("rev", ["a:b:c", "::", f"{FIRST}:{HEAD}:x", "head:", ":head"])
@pytest.mark.parametrize("task", ["dev.upgrade", "dev.downgrade"])
def test_sql_with_a_malformed_range_is_bad_input(project, task, rev) -> None:
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(project.tmp / "dev.sqlite3"))
    result = project.invoke(task, "--sql", "--rev", rev)
    assert_one_line_error(result, ExitCode.USAGE, f"{task}: ", repr(rev))


# --- item 8: a reader that goes away (| head) ---------------------------------------------------


def _with_closed_stdout(*argv: str) -> tuple[int, str]:
    """Run `invoke ARGV` with its stdout a pipe whose reader has already gone away."""
    import os
    import subprocess

    from tests.conftest import ROOT

    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", *argv],
        cwd=ROOT,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # like `| head` having read what it wanted
    stderr = process.stderr.read()
    return process.wait(timeout=300), stderr


def test_a_closed_pipe_neither_prints_nor_stops_an_upgrade(project, dev_on_both: str) -> None:
    from tests.conftest import schema_snapshot
    from tests.helpers import version_rows

    code, stderr = _with_closed_stdout("dev.upgrade")
    assert (code, stderr) == (0, "")
    assert version_rows(schema_snapshot(dev_on_both)) == [HEAD]
    code, stderr = _with_closed_stdout("dev.history", "--verbose")
    assert (code, stderr) == (0, "")


# --- item 8: code we import calling sys.exit ----------------------------------------------------


def test_a_models_module_calling_sys_exit_is_one_prefixed_line(project, tmp_path) -> None:
    import uuid

    module = f"models_exit_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text('import sys\nsys.exit("models are not ready")\n')
    project.monkeypatch.syspath_prepend(str(tmp_path))
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(project.tmp / "dev.sqlite3"))
    (project.tmp / "dev.sqlite3").touch()  # a read never creates the file (issue 18.4)
    project.setenv("INVOKE_MIGRATIONS_METADATA", f"{module}:metadata")

    result = project.invoke("dev.check")

    assert_one_line_error(result, ExitCode.USAGE, "dev.check: ", "models are not ready")


def test_a_revision_calling_sys_exit_is_one_prefixed_line(project, scripts) -> None:
    (scripts.versions / "0000_exits.py").write_text('import sys\nsys.exit("no thanks")\n')
    result = project.invoke("dev.heads")
    assert_one_line_error(result, ExitCode.FAILED, "dev.heads: ", "no thanks")


# --- item 8: booleans in the configuration ------------------------------------------------------

DEV_PROTECTED = "INVOKE_MIGRATIONS_ENVIRONMENTS_DEVELOPMENT_PROTECTED"
PROD_PROTECTED = "INVOKE_MIGRATIONS_ENVIRONMENTS_PRODUCTION_PROTECTED"


@pytest.mark.parametrize("word", ["true", "yes", "1", "TRUE", " Yes "])
def test_true_words_protect(project, word) -> None:
    """A protected upgrade with no terminal and no --yes can only be refused (exit 3)."""
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(project.tmp / "dev.sqlite3"))
    project.setenv(DEV_PROTECTED, word)
    result = project.invoke("dev.upgrade")
    assert result.code == ExitCode.REFUSED, result.output


@pytest.mark.parametrize("word", ["false", "no", "0", "FALSE", " No "])
def test_false_words_do_not_protect(project, word) -> None:
    """Invoke read every variable but "0" and "" over a YAML boolean as true: "false" and "no"
    protected development (and production stayed protected only by that accident)."""
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(project.tmp / "dev.sqlite3"))
    project.setenv(DEV_PROTECTED, word)
    assert_ok(project.invoke("dev.upgrade"))


@pytest.mark.parametrize("word", ["", "maybe", "on", "2", "nope"])
def test_other_words_are_a_configuration_error(project, word) -> None:
    from tests.conftest import schema_snapshot

    url = sqlite_url(project.tmp / "prod.sqlite3")
    project.setenv("DATABASE_URL_PRODUCTION", url)
    project.setenv(PROD_PROTECTED, word)
    result = project.invoke("prod.upgrade", "--yes", "--no-backup")
    assert_one_line_error(result, ExitCode.USAGE, "prod.upgrade: ", "protected")
    assert schema_snapshot(url) == {}


def _audit_rows(url: str) -> list[dict]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            query = sqlalchemy.text("SELECT * FROM migration_audit ORDER BY id")
            return [dict(row._mapping) for row in connection.execute(query)]
    finally:
        engine.dispose()


def _warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("WARNING:")]


@pytest.mark.postgres
def test_production_unprotected_by_a_variable_warns_and_is_audited(project, pg_url) -> None:
    import json

    project.setenv("DATABASE_URL_PRODUCTION", pg_url)
    project.setenv(PROD_PROTECTED, "no")
    result = project.invoke("prod.upgrade", "--yes")
    assert_ok(result)
    (warning,) = _warnings(result)
    assert "production" in warning and f"{PROD_PROTECTED}=no" in warning
    (row,) = _audit_rows(pg_url)
    assert json.loads(row["arguments"])["protection_override"] == f"{PROD_PROTECTED}=no"
    assert project.log_records()[-1]["arguments"]["protection_override"]


@pytest.mark.postgres
def test_production_unprotected_by_a_config_file_warns_and_is_audited(project, pg_url) -> None:
    import json

    project.setenv("DATABASE_URL_PRODUCTION", pg_url)
    override = project.tmp / "unprotect.yaml"
    override.write_text('migrations:\n  environments:\n    production:\n      protected: "0"\n')
    result = project.invoke("-f", str(override), "prod.upgrade", "--yes")
    assert_ok(result)
    (warning,) = _warnings(result)
    assert "-f" in warning
    (row,) = _audit_rows(pg_url)
    assert "-f" in json.loads(row["arguments"])["protection_override"]


def test_protected_environments_do_not_warn(project) -> None:
    import sqlite3

    for name in ("prod", "dev"):  # a read never creates a database file: they exist
        sqlite3.connect(project.tmp / f"{name}.sqlite3").close()
    project.setenv("DATABASE_URL_PRODUCTION", sqlite_url(project.tmp / "prod.sqlite3"))
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(project.tmp / "dev.sqlite3"))
    for name in ("prod.sqlite3", "dev.sqlite3"):  # a read never creates the file (issue 18.4)
        (project.tmp / name).touch()
    for task in ("prod.current", "dev.current"):
        result = project.invoke(task)
        assert_ok(result)
        assert _warnings(result) == []


def test_a_yaml_boolean_the_variable_disagrees_with_is_an_error(project) -> None:
    """A team's own file writing `protected: true` makes Invoke cast the variable itself ("no"
    becomes true); which one was meant cannot be known, so the task refuses to guess."""
    project.setenv("DATABASE_URL_PRODUCTION", sqlite_url(project.tmp / "prod.sqlite3"))
    override = project.tmp / "bool.yaml"
    override.write_text("migrations:\n  environments:\n    production:\n      protected: true\n")
    project.setenv(PROD_PROTECTED, "no")
    result = project.invoke("-f", str(override), "prod.current")
    assert_one_line_error(result, ExitCode.USAGE, "prod.current: ", PROD_PROTECTED)


# --- item 8: the audit's git_commit -------------------------------------------------------------


def _git(folder: Path, *argv: str) -> None:
    import subprocess

    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *argv],
        cwd=folder,
        check=True,
        capture_output=True,
    )


def test_git_commit_is_dirty_with_an_untracked_revision_file(tmp_path) -> None:
    from tasks.guard.audit import git_commit

    versions = tmp_path / "alembic" / "versions"
    versions.mkdir(parents=True)
    (versions / "0001_first.py").write_text("revision = '0001'\n")
    (tmp_path / ".gitignore").write_text("logs/\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "first")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.py").write_text("")  # ignored files never count
    (tmp_path / "notes.txt").write_text("")  # nor untracked notes
    clean = git_commit(tmp_path)
    assert clean and not clean.endswith("-dirty")

    git_commit.cache_clear()
    (versions / "0002_not_committed.py").write_text("revision = '0002'\n")
    try:
        assert git_commit(tmp_path) == f"{clean}-dirty"
    finally:
        git_commit.cache_clear()


@pytest.mark.parametrize("argv", [["--list"], ["--help", "prod.upgrade"]], ids=["list", "help"])
def test_invokes_own_output_into_a_closed_pipe_has_no_traceback(project, argv) -> None:
    code, stderr = _with_closed_stdout(*argv)
    assert stderr == "" and code in (0, 1)
