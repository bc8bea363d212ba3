"""Adoption by real applications (issue 8): models from anywhere, an existing Alembic project
with its own ini, folder and env.py, revisions that run, and the smaller promises (warnings in
the run log, the drop warning naming migrations.metadata, the stamp hint, a bad ini exits 2).

Every test builds a throwaway application package (`adopt_app_<id>`) and, where needed, a
team's own alembic.ini and migrations folder under tmp, then runs the tasks through Invoke's CLI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tasks.core.errors import ExitCode
from tests.conftest import ROOT, schema_snapshot
from tests.helpers import (
    APP_TABLES,
    HEAD,
    SECRET,
    assert_ok,
    assert_one_line_error,
    copy_scripts,
    prepare,
    sqlite_url,
    table_names,
    venv_bin,
    version_rows,
)

MODELS = """\
import warnings

from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.orm import DeclarativeBase, registry

from {package}.types import EncryptedString


class Base(DeclarativeBase):
    pass


class Secret(Base):
    __tablename__ = "secrets"
    id = Column(Integer, primary_key=True)
    value = Column(EncryptedString(length=1000), nullable=False)


mapper_registry = registry(metadata=Base.metadata)

OTHER = MetaData()
Table("others", OTHER, Column("id", Integer, primary_key=True), Column("name", String(20)))

BOTH = [Base.metadata, OTHER]
NOT_MODELS = "hello"


def load():
    return Base


def widened():
    # This repository's models with users.email widened: an ALTER, batch mode on SQLite.
    from database.imports import import_all_models

    copy = MetaData()
    for table in import_all_models().sorted_tables:
        table.to_metadata(copy)
    copy.tables["users"].c.email.type = String(400)
    return copy


def noisy():
    warnings.warn("a very long warning from the models " + "x" * 200, UserWarning, stacklevel=1)
    return Base.metadata
"""

TYPES = """\
from sqlalchemy import String
from sqlalchemy.types import TypeDecorator


class EncryptedString(TypeDecorator):
    impl = String
    cache_ok = True
"""

# Alembic's cookbook, "Sharing a Connection across one or more programmatic migration
# commands": the caller's connection in config.attributes["connection"], or an engine.
COOKBOOK_ENV = """\
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
target_metadata = None


def run_migrations_online():
    connectable = config.attributes.get("connection", None)
    if connectable is None:
        connectable = engine_from_config(
            config.get_section(config.config_ini_section), prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        )
        with connectable.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
    else:
        context.configure(connection=connectable, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
"""

TEAM_INI = """\
[alembic]
script_location = migrations
prepend_sys_path = .
sqlalchemy.url = driver://user:pass@localhost/dbname

[loggers]
keys = root,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console
qualname =

[logger_alembic]
level = INFO
handlers = console
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""


@pytest.fixture
def app(project, tmp_path: Path) -> str:
    """A throwaway application package on sys.path, forgotten afterwards."""
    package = f"adopt_app_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "apps" / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "types.py").write_text(TYPES)
    (folder / "db.py").write_text(MODELS.format(package=package))
    project.monkeypatch.syspath_prepend(str(tmp_path / "apps"))
    yield package
    for name in [name for name in sys.modules if name.split(".")[0] == package]:
        del sys.modules[name]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def dev_url(request, project) -> str:
    if request.param == "sqlite":
        (project.tmp / "dev.sqlite3").touch()  # an empty database: a read never creates one
        url = sqlite_url(project.tmp / "dev.sqlite3")
    else:
        url = request.getfixturevalue("pg_url")
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    return url


def team_project(project, env_py: str, *, with_history: bool = True) -> Path:
    """An existing Alembic project: its own ini with a relative script_location, its own
    migrations/env.py, and (optionally) this repository's two revisions as its history."""
    team = project.tmp / "team"
    versions = team / "migrations" / "versions"
    versions.mkdir(parents=True)
    (team / "alembic.ini").write_text(TEAM_INI)
    (team / "migrations" / "env.py").write_text(env_py)
    shutil.copy2(ROOT / "alembic" / "script.py.mako", team / "migrations" / "script.py.mako")
    if with_history:
        for revision in (ROOT / "alembic" / "versions").glob("*.py"):
            shutil.copy2(revision, versions / revision.name)
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(team / "alembic.ini"))
    return team


def our_scripts(project, *, with_history: bool = True) -> None:
    """A private copy of this repository's alembic.ini (with its ruff hooks) and alembic/."""
    copy = copy_scripts(project.tmp / "ours")
    if not with_history:
        for revision in copy.versions.glob("*.py"):
            revision.unlink()
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))


def generic_env_py(target_metadata: str = "None", imports: str = "") -> str:
    """The env.py `alembic init` writes (engine_from_config on sqlalchemy.url)."""
    import alembic

    template = Path(alembic.__file__).parent / "templates" / "generic" / "env.py"
    text = template.read_text()
    return imports + text.replace("target_metadata = None", f"target_metadata = {target_metadata}")


# --- Metadata from anywhere -----------------------------------------------------------------


def readme_metadata_example() -> str:
    match = re.search(r'metadata: "(myapp\.db:[^"]+)"', (ROOT / "README.md").read_text())
    assert match, "README lost its migrations.metadata example"
    return match[1]


def test_readme_example_works_verbatim(project, app, dev_url):
    """`myapp.db:Base.metadata`, exactly as the README writes it (myapp = a real package)."""
    example = readme_metadata_example()
    assert example == "myapp.db:Base.metadata"
    project.setenv("INVOKE_MIGRATIONS_METADATA", example.replace("myapp", app, 1))

    result = project.invoke("dev.check")

    assert result.code == ExitCode.DIFFERENCES, result.output
    assert "secrets" in result.stdout and "users" not in result.stdout
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("attribute", "tables"),
    [
        ("Base", {"secrets"}),
        ("mapper_registry", {"secrets"}),
        ("load", {"secrets"}),
        ("OTHER", {"others"}),
        ("BOTH", {"secrets", "others"}),
    ],
)
def test_every_metadata_form_resolves(project, app, attribute, tables):
    """A declarative base, a registry, a function returning a base, a MetaData, a list."""
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(project.tmp / "dev.sqlite3"))
    (project.tmp / "dev.sqlite3").touch()  # an empty database: a read never creates one
    project.setenv("INVOKE_MIGRATIONS_METADATA", f"{app}.db:{attribute}")

    result = project.invoke("dev.check")

    assert result.code == ExitCode.DIFFERENCES, result.output
    reported = set(re.findall(r"add_table (\w+)", result.stdout))
    assert reported == tables, result.stdout


@pytest.mark.parametrize(
    ("attribute", "needles"),
    [
        ("NOT_MODELS", ["is a str ('hello')", "declarative base"]),
        ("Base.nope", ["has no attribute 'nope'", ".db.Base"]),
        ("", ["must look like 'module:attribute'"]),
    ],
)
def test_metadata_errors_name_what_was_found(project, app, attribute, needles):
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(project.tmp / "dev.sqlite3"))
    (project.tmp / "dev.sqlite3").touch()  # an empty database: a read never creates one
    project.setenv("INVOKE_MIGRATIONS_METADATA", f"{app}.db:{attribute}")

    result = project.invoke("dev.check")

    assert_one_line_error(result, ExitCode.USAGE, *needles)


# --- Existing Alembic projects --------------------------------------------------------------


@pytest.mark.parametrize("env_kind", ["alembic init", "cookbook"])
def test_team_env_py_runs_under_the_tasks(project, dev_url, env_kind):
    """A relative script_location (relative to the ini, not to the shell), the team's env.py
    in either documented pattern: upgrade, current, downgrade, all with the tasks' audit."""
    team_project(project, generic_env_py() if env_kind == "alembic init" else COOKBOOK_ENV)

    upgraded = project.invoke("dev.upgrade")
    assert_ok(upgraded)
    assert upgraded.stderr.strip() == "", upgraded.stderr  # env.py's fileConfig stays quiet
    snapshot = schema_snapshot(dev_url)
    assert table_names(snapshot) >= APP_TABLES
    assert version_rows(snapshot) == [HEAD]

    current = project.invoke("dev.current")
    assert_ok(current)
    assert f"{HEAD} (head)" in current.stdout

    assert_ok(project.invoke("dev.downgrade", "--rev", "-1", "--yes"))
    assert "memberships" not in table_names(schema_snapshot(dev_url))
    assert_ok(project.invoke("dev.upgrade"))
    assert_ok(project.invoke("dev.check"))

    import sqlalchemy

    engine = sqlalchemy.create_engine(dev_url)
    with engine.connect() as connection:
        tasks = [
            row[0]
            for row in connection.execute(
                sqlalchemy.text("SELECT task FROM migration_audit ORDER BY id")
            )
        ]
    engine.dispose()
    assert tasks.count("dev.upgrade") == 2 and "dev.downgrade" in tasks


def test_team_env_py_offline_sql_gets_the_url(project, dev_url):
    """Offline mode in the stock env.py reads sqlalchemy.url: the real one, never printed."""
    team_project(project, generic_env_py())

    result = project.invoke("dev.upgrade", "--sql")

    assert_ok(result)
    assert "CREATE TABLE users" in result.stdout


def test_missing_script_location_is_a_config_error(project, dev_url):
    team = team_project(project, COOKBOOK_ENV)
    (team / "alembic.ini").write_text(TEAM_INI.replace("= migrations", "= no_such_folder"))

    result = project.invoke("dev.current")

    assert_one_line_error(result, ExitCode.USAGE, "script_location", "no_such_folder")


def test_script_location_override(project, dev_url):
    """migrations.script_location wins over the ini (relative to the project)."""
    team = team_project(project, COOKBOOK_ENV)
    (team / "alembic.ini").write_text(TEAM_INI.replace("= migrations", "= no_such_folder"))
    project.setenv("INVOKE_MIGRATIONS_SCRIPT_LOCATION", str(team / "migrations"))

    assert_ok(project.invoke("dev.upgrade"))
    assert version_rows(schema_snapshot(dev_url)) == [HEAD]

    project.setenv("INVOKE_MIGRATIONS_VERSION_LOCATIONS", str(team / "nowhere"))
    result = project.invoke("dev.current")
    assert_one_line_error(result, ExitCode.USAGE, "migrations.version_locations", "nowhere")


def test_version_locations_override(project, dev_url):
    """The history may live outside script_location: migrations.version_locations finds it."""
    team = team_project(project, COOKBOOK_ENV)
    (team / "migrations" / "versions").rename(team / "history")
    project.setenv("INVOKE_MIGRATIONS_VERSION_LOCATIONS", str(team / "history"))

    assert_ok(project.invoke("dev.upgrade"))
    assert version_rows(schema_snapshot(dev_url)) == [HEAD]


@pytest.mark.parametrize(
    "ini",
    [
        "this is not an ini file\n",
        "[alembic]\nscript_location = %(missing)s/migrations\n",
        "[alembic]\nscript_location = migrations\nversion_locations = a b\n"
        "path_separator = bogus\n",
    ],
    ids=["garbage", "interpolation", "separator"],
)
def test_a_bad_ini_exits_2(project, dev_url, ini):
    team = team_project(project, COOKBOOK_ENV)
    (team / "alembic.ini").write_text(ini)
    before = schema_snapshot(dev_url)

    result = project.invoke("dev.upgrade")

    assert_one_line_error(result, ExitCode.USAGE, "alembic.ini")
    assert schema_snapshot(dev_url) == before


def test_env_py_that_cannot_be_driven_is_blamed_not_the_revision(project, dev_url):
    broken = COOKBOOK_ENV.replace(
        'connectable = config.attributes.get("connection", None)',
        'connectable = None\n    config.set_main_option("sqlalchemy.url", "not a url")',
    )
    team_project(project, broken)

    result = project.invoke("dev.upgrade")

    line = assert_one_line_error(result, ExitCode.FAILED, "env.py failed")
    assert "revision" not in line.split("env.py failed")[0]
    assert "config.attributes['connection']" in line


# --- Revisions that run ---------------------------------------------------------------------


def lint_clean(path: Path) -> None:
    ruff = venv_bin("ruff")
    for argv in ([ruff, "check", str(path)], [ruff, "format", "--check", str(path)]):
        completed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        assert completed.returncode == 0, completed.stdout + completed.stderr


def created(result) -> Path:
    match = re.search(r"^created (\S+\.py)$", result.stdout, re.M)
    assert match, result.output
    path = Path(match[1])
    return path if path.is_absolute() else ROOT / path


def test_custom_type_is_imported_and_the_revision_runs(project, app, dev_url):
    """Our env.py renders `import <app>.types`; ruff's post-write hooks leave it lint-clean."""
    our_scripts(project, with_history=False)
    project.setenv("INVOKE_MIGRATIONS_METADATA", f"{app}.db:Base.metadata")

    result = project.invoke("dev.revision", "-m", "secrets", "--autogenerate")

    assert_ok(result)
    path = created(result)
    text = path.read_text()
    assert f"import {app}.types" in text
    assert f"{app}.types.EncryptedString(length=1000)" in text
    lint_clean(path)
    assert_ok(project.invoke("dev.upgrade"))
    assert "secrets" in table_names(schema_snapshot(dev_url))


def test_team_env_py_without_render_item_still_imports_the_custom_type(project, app, dev_url):
    """A team env.py without render_item: the tasks add the type's import to what its
    autogenerate writes (issue 17), so the revision runs instead of failing with NameError."""
    env_py = generic_env_py("Base.metadata", imports=f"from {app}.db import Base\n")
    team = team_project(project, env_py, with_history=False)
    project.setenv("INVOKE_MIGRATIONS_METADATA", f"{app}.db:Base.metadata")

    result = project.invoke("dev.revision", "-m", "secrets", "--autogenerate")

    assert_ok(result)
    [path] = list((team / "migrations" / "versions").glob("*.py"))
    assert f"import {app}.types" in path.read_text()
    assert_ok(project.invoke("dev.upgrade"))
    assert "secrets" in table_names(schema_snapshot(dev_url))


def test_altering_revision_is_proved_and_runs(project, app, dev_url):
    """SQLite's batch rebuild cannot render offline: it is proved on a copy of the database."""
    our_scripts(project)
    prepare(project, dev_url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", f"{app}.db:widened")

    result = project.invoke("dev.revision", "-m", "widen email", "--autogenerate")

    assert_ok(result)
    assert "Running post write hook" not in result.output
    path = created(result)
    assert "modify_type users.email" in result.stdout
    lint_clean(path)
    assert_ok(project.invoke("dev.upgrade"))
    assert_ok(project.invoke("dev.check"))


def test_empty_revision_is_lint_clean(project, dev_url):
    our_scripts(project)
    prepare(project, dev_url)

    result = project.invoke("dev.revision", "-m", "hand written")

    assert_ok(result)
    lint_clean(created(result))


def test_missing_hook_module_is_skipped_with_a_warning(project, dev_url):
    copy = copy_scripts(project.tmp / "ours")
    copy.ini.write_text(
        copy.ini.read_text().replace("ruff_fix.module = ruff", "ruff_fix.module = no_such_fixer")
    )
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    prepare(project, dev_url)

    result = project.invoke("dev.revision", "-m", "hand written")

    assert_ok(result)
    assert "post-write hook ruff_fix skipped: module 'no_such_fixer'" in result.stderr
    formatted = subprocess.run(
        [venv_bin("ruff"), "format", "--check", str(created(result))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert formatted.returncode == 0, formatted.stdout  # the other hook still ran


# --- The smaller ones ----------------------------------------------------------------------


def test_drop_warning_names_the_configured_metadata(project, app, dev_url):
    prepare(project, dev_url)
    our_scripts(project)
    project.setenv("INVOKE_MIGRATIONS_METADATA", f"{app}.db:OTHER")

    result = project.invoke("dev.revision", "-m", "oops", "--autogenerate")

    assert_ok(result)
    warning = [line for line in result.stderr.splitlines() if "DROPS" in line]
    assert warning and f"migrations.metadata ({app}.db:OTHER)" in warning[0], result.stderr
    assert "database/imports.py" not in result.stderr


def test_warnings_go_to_the_run_log(project, app, dev_url):
    project.setenv("INVOKE_MIGRATIONS_METADATA", f"{app}.db:noisy")

    result = project.invoke("dev.check")

    assert result.code == ExitCode.DIFFERENCES, result.output
    assert "very long warning" not in result.output
    logged = project.log_records()[-1]["details"].get("warnings", [])
    assert any("UserWarning: a very long warning" in item for item in logged), logged


def test_upgrade_after_tables_without_a_revision_says_stamp(project, any_url):
    """Tables built without a revision (create_all, a dump; local.sync now records the head
    itself, issue 18.2): local.upgrade from base runs into them and says to stamp."""
    import sqlalchemy

    from database.imports import import_all_models

    project.setenv("DATABASE_URL_LOCAL", any_url)
    engine = sqlalchemy.create_engine(any_url)
    try:
        import_all_models().create_all(engine)
    finally:
        engine.dispose()
    assert table_names(schema_snapshot(any_url)) >= APP_TABLES

    result = project.invoke("local.upgrade")

    assert_one_line_error(
        result, ExitCode.FAILED, "already exists", "invoke local.stamp --rev head"
    )
    assert_ok(project.invoke("local.stamp", "--rev", "head", "--yes"))
    assert_ok(project.invoke("local.upgrade"))


def test_sync_records_the_head_so_upgrade_has_nothing_to_do(project, any_url):
    project.setenv("DATABASE_URL_LOCAL", any_url)
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    synced = project.invoke("local.sync")
    # MariaDB: the history cannot be built on its dialect here; sync says how to record it.
    assert synced.code in {ExitCode.OK, ExitCode.NEEDS_REVISION}, synced.output
    if "recorded revision" not in synced.stdout:
        assert "invoke local.stamp --rev head" in synced.stdout, synced.output
        return

    result = project.invoke("local.upgrade")

    assert_ok(result)
    assert "nothing to upgrade" in result.stdout


@pytest.mark.postgres
def test_url_handed_to_env_py_is_escaped_and_masked(project, pg_url):
    """sqlalchemy.url carries the real URL, `%` included (configparser would read `%x` as an
    interpolation); when an env.py shows it in an error, the password is masked."""
    import sqlalchemy

    url = sqlalchemy.make_url(pg_url).set(password=f"{SECRET}%x")  # trust auth ignores it
    project.setenv("DATABASE_URL_DEVELOPMENT", url.render_as_string(hide_password=False))
    team = team_project(project, generic_env_py())

    assert_ok(upgraded := project.invoke("dev.upgrade"))
    assert SECRET not in upgraded.output

    leaking = COOKBOOK_ENV.replace(
        "def run_migrations_online():",
        "def run_migrations_online():\n"
        '    raise RuntimeError(config.get_main_option("sqlalchemy.url"))',
    )
    (team / "migrations" / "env.py").write_text(leaking)
    result = project.invoke("dev.downgrade", "--rev", "-1", "--yes")

    line = assert_one_line_error(result, ExitCode.FAILED, "env.py failed", "RuntimeError")
    assert SECRET not in result.output and SECRET not in project.log_file.read_text()
    assert "***" in line


def test_our_env_py_takes_a_cookbook_shared_connection(project):
    """A program driving this repository's env.py the cookbook way (pytest-alembic does) has
    its connection used, not the one ENVIRONMENT would open."""
    shared = project.tmp / "shared.sqlite3"
    elsewhere = project.tmp / "elsewhere.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(elsewhere))
    script = textwrap.dedent(
        f"""
        import sqlalchemy
        from alembic import command
        from alembic.config import Config

        engine = sqlalchemy.create_engine({sqlite_url(shared)!r})
        with engine.begin() as connection:
            config = Config({str(ROOT / "alembic.ini")!r})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        """
    )

    result = project.run(sys.executable, "-c", script)

    assert result.code == 0, result.output
    assert version_rows(schema_snapshot(sqlite_url(shared))) == [HEAD]
    assert not elsewhere.exists() or "alembic_version" not in schema_snapshot(sqlite_url(elsewhere))
