"""Issue 12.5: errors with their location. The one stderr line names `file:line` for errors in
models, env.py and revisions; the run log keeps the full traceback (redacted) under `exception`;
Invoke's `--debug` prints it to stderr."""

from __future__ import annotations

import sys

from tasks.core.errors import ExitCode
from tests.helpers import SECRET, assert_one_line_error, copy_scripts
from tests.revision_chains import empty_chain

BAD_MODELS = """\
import sqlalchemy as sa

metadata = sa.MetaData()
sa.Table("t", metadata, sa.Column("id", sa.Integer, primary_key=True))
undefined_name_in_models
"""


def _bad_models(project):
    package = project.tmp / "app"
    package.mkdir()
    (package / "badmodels.py").write_text(BAD_MODELS)
    project.monkeypatch.syspath_prepend(str(package))
    project.monkeypatch.delitem(sys.modules, "badmodels", raising=False)
    project.setenv("INVOKE_MIGRATIONS_METADATA", "badmodels:metadata")
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{project.tmp / 'dev.sqlite3'}")
    (project.tmp / "dev.sqlite3").touch()  # reads (dev.check) never create the file
    return package / "badmodels.py"


def test_a_models_name_error_names_file_and_line(project):
    path = _bad_models(project)

    result = project.invoke("dev.check")

    line = assert_one_line_error(result, ExitCode.USAGE, "undefined_name_in_models")
    assert line.endswith(f"({path}:5)"), line
    (finished,) = [r for r in project.log_records() if r.get("event") == "task finished"]
    assert "NameError" in finished["exception"] and "badmodels.py" in finished["exception"]
    assert "Traceback" in finished["exception"]


def test_a_revision_name_error_names_the_revision_file_and_line(project):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        "e00000000001", "broken", "op.execute('SELECT 1')\nundefined_in_revision", record=False
    )
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{project.tmp / 'dev.sqlite3'}")

    result = project.invoke("dev.upgrade")

    line = assert_one_line_error(result, ExitCode.FAILED, "e00000000001", "undefined_in_revision")
    source = next(chain.scripts.versions.glob("e00000000001_*.py"))
    number = source.read_text().splitlines().index("    undefined_in_revision") + 1
    assert line.endswith(f"{source.name}:{number})"), line


def test_an_env_py_error_names_env_py(project):
    scripts = copy_scripts(project.tmp / "scripts")
    env_py = scripts.ini.parent / "alembic" / "env.py"
    lines = env_py.read_text().splitlines()
    at = lines.index("def run_migrations_online() -> None:")
    lines.insert(at + 1, "    undefined_in_env_py  # noqa")
    env_py.write_text("\n".join(lines) + "\n")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(scripts.ini))
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{project.tmp / 'dev.sqlite3'}")

    result = project.invoke("dev.upgrade")

    line = assert_one_line_error(result, ExitCode.FAILED, "undefined_in_env_py")
    assert line.endswith(f"env.py:{at + 2})"), line


def test_an_unexpected_error_keeps_its_traceback_redacted(project, monkeypatch):
    from tasks.migrate import commands as migrations

    project.setenv("DATABASE_URL_DEVELOPMENT", f"postgresql://u:{SECRET}@127.0.0.1:1/x")

    def broken(session):
        session.environment  # noqa: B018 - resolves the URL, registering its password
        raise RuntimeError(f"boom near postgresql://u:{SECRET}@127.0.0.1:1/x")

    monkeypatch.setattr(migrations, "heads", broken)

    result = project.invoke("dev.heads")

    line = assert_one_line_error(result, ExitCode.FAILED, "unexpected error: RuntimeError")
    assert "test_error_locations.py:" in line  # the frame that raised it
    (finished,) = [r for r in project.log_records() if r.get("event") == "task finished"]
    assert "RuntimeError" in finished["exception"] and "def broken" not in finished["exception"]
    assert "raise RuntimeError" in finished["exception"]
    assert SECRET not in project.log_file.read_text() and SECRET not in result.output


def test_debug_prints_the_traceback_to_stderr(project, tmp_path):
    path = _bad_models(project)
    project.setenv("PYTHONPATH", str(path.parent))

    plain = project.invoke_subprocess("dev.check")
    debug = project.invoke_subprocess("--debug", "dev.check")

    assert plain.code == debug.code == ExitCode.USAGE
    assert "Traceback" not in plain.stderr
    assert "Traceback (most recent call last)" in debug.stderr
    assert f'File "{path}", line 5' in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1] == plain.stderr.strip()


def test_errors_without_an_underlying_exception_stay_plain(project):
    project.setenv("DATABASE_URL_DEVELOPMENT", "not a url")

    result = project.invoke("dev.current")

    line = assert_one_line_error(result, ExitCode.USAGE, "DATABASE_URL_DEVELOPMENT")
    assert ".py:" not in line
