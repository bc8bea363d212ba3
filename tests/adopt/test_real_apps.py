"""Real applications from PyPI, adopted end to end on PostgreSQL (issue 8's acceptance).

Each application is installed into a throwaway virtualenv (cached for the session, skipped with
the reason when it cannot be installed) that also sees this project's own packages through a
`.pth` file; uv installs it with this project's exact versions of what they share (SQLAlchemy and
Alembic above all), so the application runs on the same ones (install_command). The tasks
then run in that virtualenv's Python, as a team that adds them to its application would run them,
with `migrations.metadata` and `migrations.alembic_ini` pointing into the installed package: its
own alembic.ini, env.py and history, untouched.

Both applications build a fresh database with their own tooling (`metadata.create_all`, then
`alembic stamp head`) rather than by running their history from empty (buildbot's first
revision is an empty placeholder; dagster's revisions alter tables they expect to exist), so
that is the starting state here too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.core.comparison import TOOL_TABLES
from tasks.core.errors import ExitCode
from tests.conftest import (
    ROOT,
    Result,
    create_pg_database,
    drop_pg_database,
    python_command,
)
from tests.helpers import assert_ok, assert_one_line_error

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@dataclass(frozen=True)
class App:
    requirement: str
    # A module whose file locates the installed package, and the ini inside it.
    anchor: str
    alembic_ini: str
    metadata: str
    # A module written next to the tests for metadata that lives in several objects.
    shim: str = ""
    # The application's own downgrade of its head fails on PostgreSQL: the task must then say
    # so in one line naming the revision, and leave the database where it was.
    upstream_downgrade_bug: str = ""
    # Its modules that every command imports (models, what its revisions import), imported
    # once by the fork server its commands run from (tests/fork_server.py).
    preload: tuple[str, ...] = ()


APPS = {
    "buildbot": App(
        requirement="buildbot",
        anchor="buildbot",
        alembic_ini="db/migrations/alembic.ini",
        metadata="buildbot.db.model:Model.metadata",
        # 067's downgrade drops `codebases` before `codebase_commits`, whose foreign key
        # needs it (buildbot tests its downgrades on SQLite, which does not enforce that).
        upstream_downgrade_bug="cannot drop table codebases because other objects depend on it",
        preload=("buildbot.db.model",),
    ),
    "dagster": App(
        requirement="dagster",
        anchor="dagster",
        alembic_ini="_core/storage/runs/sqlite/alembic/alembic.ini",
        # The run, event log and schedule storages share one PostgreSQL database (and define
        # their common secondary_indexes table alike): a list, as dagster's env.py passes it.
        metadata="dagster_storages:STORAGES",
        shim=(
            "from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata\n"
            "from dagster._core.storage.runs.schema import RunStorageSqlMetadata\n"
            "from dagster._core.storage.schedules.schema import ScheduleStorageSqlMetadata\n\n"
            "STORAGES = [RunStorageSqlMetadata, SqlEventLogStorageMetadata, "
            "ScheduleStorageSqlMetadata]\n"
        ),
        preload=(
            "dagster._core.storage.event_log.schema",
            "dagster._core.storage.runs.schema",
            "dagster._core.storage.schedules.schema",
            "dagster._core.storage.migration.utils",
        ),
    ),
}


@pytest.fixture(scope="session")
def app_venvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> the Python of a virtualenv holding that application; cached per session."""
    return {}


# The application modules each virtualenv's Python preloads in its fork server.
PRELOADS: dict[Path, tuple[str, ...]] = {}


def app_python(
    name: str, venvs: dict[str, Path], root: Path, requirement: str = "",
    preload: tuple[str, ...] = (),
) -> Path:  # fmt: skip
    if name in venvs:
        return venvs[name]
    venv = root / f"venv-{name}"
    created = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0:
        pytest.skip(f"cannot create a virtualenv for {name}: {created.stderr.strip()[-200:]}")
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    # This project's packages (tasks' dependencies, SQLAlchemy, Alembic, pytest) stay visible.
    (site / "_project.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    wanted = requirement or APPS[name].requirement
    installed = subprocess.run(
        install_command(python, wanted, root / f"constraints-{name}.txt"),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if installed.returncode != 0:
        tail = " ".join(installed.stderr.split()[-30:])
        pytest.skip(f"cannot install {wanted} here: {tail}")
    venvs[name] = python
    PRELOADS[python] = preload or (APPS[name].preload if name in APPS else ())
    return python


def install_command(python: Path, requirement: str, constraints: Path) -> list[str]:
    """uv when the test environment has it (requirements-dev.txt), pip otherwise.

    uv does not count the packages the `.pth` file shows, so it installs the application's
    shared dependencies into its virtualenv as well: pinned to the versions this project runs
    on (SQLAlchemy and Alembic above all), so the application is tested on the same ones.
    """
    from importlib.metadata import distributions

    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    if uv is None:
        return [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                requirement]  # fmt: skip
    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions() if d.metadata})
    constraints.write_text("\n".join(pins) + "\n")
    return [uv, "pip", "install", "--quiet", "--python", str(python), "-c", str(constraints),
            requirement]  # fmt: skip


@pytest.fixture(params=sorted(APPS))
def adopted(request, project, pg_url, app_venvs, tmp_path_factory):
    """The tasks pointed at an installed application, on a fresh PostgreSQL database."""
    name = request.param
    app = APPS[name]
    python = app_python(name, app_venvs, tmp_path_factory.getbasetemp())
    package_dir = _package_dir(python, app.anchor)
    shims = project.tmp / "shims"
    shims.mkdir()
    if app.shim:
        (shims / f"{app.metadata.partition(':')[0]}.py").write_text(app.shim)
    project.setenv("PYTHONPATH", f"{ROOT}:{shims}")
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    project.setenv("DATABASE_URL_LOCAL", pg_url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", app.metadata)
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(package_dir / app.alembic_ini))
    return name, python, pg_url


def run(python: Path, *argv: str) -> Result:
    """`PYTHON -c|-m ...` in a process of its own, forked from one that has imported the
    application (each Prefect command would otherwise spend 4.5 s importing Prefect)."""
    return python_command(python, *argv, modules=PRELOADS.get(python, ()))


def invoke(python: Path, *argv: str) -> Result:
    return run(python, "-m", "invoke", "--search-root", str(ROOT), *argv)


def invoke_local(python: Path, *argv: str) -> Result:
    """A `local.*` task on the database dev also names: the scope rule refuses it while
    DATABASE_URL_DEVELOPMENT says the same, so that variable is left out for the run."""
    import os

    saved = os.environ.pop("DATABASE_URL_DEVELOPMENT", None)
    try:
        return invoke(python, *argv)
    finally:
        if saved is not None:
            os.environ["DATABASE_URL_DEVELOPMENT"] = saved


def assert_local_sync_converges(python: Path) -> None:
    """`local.sync` brings DATABASE_URL_LOCAL to the models, `--check` then agrees, and a
    second sync applies nothing."""
    first = invoke_local(python, "local.sync")
    assert_ok(first)
    assert "in sync with the models" in first.stdout
    assert_ok(invoke_local(python, "local.sync", "--check"))
    second = invoke_local(python, "local.sync")
    assert_ok(second)
    assert "applied" not in second.stdout and "in sync with the models" in second.stdout


# Run in the application's Python: its models, this project's helpers.
BUILD_WITH_OWN_TOOLING = """
import os, sqlalchemy
from tasks.core.metadata import load_metadata
engine = sqlalchemy.create_engine(os.environ["DATABASE_URL_DEVELOPMENT"])
with engine.begin() as connection:
    load_metadata(os.environ["INVOKE_MIGRATIONS_METADATA"]).create_all(connection)
engine.dispose()
"""

# Drift a real schema the way hand edits do: an index dropped, a column and a table added.
DRIFT = """
import os, sqlalchemy
from tasks.core.metadata import load_metadata
metadata = load_metadata(os.environ["INVOKE_MIGRATIONS_METADATA"])
table = next(t for t in metadata.sorted_tables if any(i.name for i in t.indexes))
index = sorted(i.name for i in table.indexes if i.name)[0]
engine = sqlalchemy.create_engine(os.environ["DATABASE_URL_DEVELOPMENT"])
with engine.begin() as connection:
    connection.exec_driver_sql(f'DROP INDEX "{index}"')
    connection.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN adoption_note text')
    connection.exec_driver_sql("CREATE TABLE adoption_extra (id integer PRIMARY KEY)")
engine.dispose()
"""

ALEMBIC_KEYS = """
import json, os, sqlalchemy
from tasks.core.metadata import load_metadata
from tests.schema.test_sync_vs_alembic import alembic_keys
metadata = load_metadata(os.environ["INVOKE_MIGRATIONS_METADATA"])
print(json.dumps(sorted(alembic_keys(os.environ["DATABASE_URL_DEVELOPMENT"], metadata))))
"""


def test_real_application_end_to_end(adopted):
    name, python, _url = adopted

    build = run(python, "-c", BUILD_WITH_OWN_TOOLING)
    assert build.code == 0, build.output

    current = invoke(python, "dev.current")
    assert_ok(current)
    assert "no revision applied (base)" in current.stdout

    history = invoke(python, "dev.history")
    assert_ok(history)
    assert len(history.stdout.splitlines()) >= 5, history.stdout

    assert_ok(invoke(python, "dev.stamp", "--rev", "head", "--yes"))
    at_head = invoke(python, "dev.current")
    assert_ok(at_head)
    assert "(head)" in at_head.stdout and "at head" in at_head.stdout

    down = invoke(python, "dev.downgrade", "--rev", "-1", "--yes")
    bug = APPS[name].upstream_downgrade_bug
    if bug:
        assert_one_line_error(down, ExitCode.FAILED, "revision", "failed", bug)
        assert "at head" in invoke(python, "dev.current").stdout  # rolled back, nothing lost
    else:
        assert_ok(down)
        assert "behind head by 1 revision" in invoke(python, "dev.current").stdout
        assert_ok(invoke(python, "dev.upgrade"))
    assert "at head" in invoke(python, "dev.current").stdout

    # The application's own models match what its tooling and history built...
    assert_ok(invoke(python, "dev.check"))
    # ...and after drift, check and `local.sync --check` report exactly what Alembic's
    # compare_metadata does, item by item.
    assert run(python, "-c", DRIFT).code == 0
    expected = [tuple(key) for key in json.loads(run(python, "-c", ALEMBIC_KEYS).stdout)]
    assert len(expected) >= 3, expected
    check = invoke(python, "dev.check")
    assert "Traceback" not in check.output
    assert check.code == ExitCode.DIFFERENCES, check.output
    synced = invoke_local(python, "local.sync", "--check", "--json")
    assert "Traceback" not in synced.output, synced.output
    report = json.loads(synced.stdout)
    reported = {
        tuple(key)
        for table in report["tables"]
        for difference in table["differences"]
        for key in difference["alembic"]
    }
    assert reported == set(expected), f"{name}: sync {sorted(reported)} != alembic {expected}"


# Why each application's history does not build from an empty database (module docstring).
HISTORY_DOES_NOT_BUILD = {
    "buildbot": 'relation "builders" does not exist',
    "dagster": "currently upgrading instance not set",
}


def test_ci_check_with_the_applications_history_trusted(adopted, project, pg_server):
    """`ci.check` with `ci.since` at the application's head, on PostgreSQL: no revision is left
    to downgrade or lint, the graph still has one head. Neither history builds from an empty
    database (their own tooling builds with create_all, then stamps): without more, ci.check
    says so in one line naming the trusted revision; with `ci.since_schema` (the schema at that
    revision, dumped) it builds the trusted start from it and passes."""
    name, python, url = adopted
    head = invoke(python, "dev.heads").stdout.split()[0]
    project.setenv("INVOKE_MIGRATIONS_CI_SINCE", head)
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "postgresql")
    project.setenv(
        "INVOKE_MIGRATIONS_CI_POSTGRES_URL", pg_server.url.render_as_string(hide_password=False)
    )

    checked = invoke(python, "ci.check")

    does_not_build = f"trusted history up to {head} (ci.since) does not build"
    assert_one_line_error(checked, ExitCode.CI_STAIRWAY, "ci.check: 2 checks failed", head)
    assert f"ok     heads: 1 head {head}" in checked.stdout
    assert "ok     downgrades: 0 revisions can be reverted" in checked.stdout
    assert "ok     lint: 0 revisions, 0 findings" in checked.stdout
    stairway = next(line for line in checked.stdout.splitlines() if "stairway:" in line)
    assert f"FAILED stairway: postgresql: {does_not_build}" in stairway
    assert HISTORY_DOES_NOT_BUILD[name] in stairway
    assert "FAILED models: postgresql: could not build the history" in checked.stdout

    # ci.since_schema: the trusted start from the schema the application's own tooling builds
    # (dumped with pg_dump --schema-only), stamped at ci.since; models are checked against it.
    assert run(python, "-c", BUILD_WITH_OWN_TOOLING).code == 0
    schema = project.tmp / "schema-at-head.sql"
    dumped = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", f"--file={schema}",
         url.replace("+psycopg2", "")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert dumped.returncode == 0, dumped.stderr
    project.setenv("INVOKE_MIGRATIONS_CI_SINCE_SCHEMA", str(schema))

    trusted = invoke(python, "ci.check")

    assert_ok(trusted)
    assert f"older revisions trusted: ci.since {head}" in trusted.stdout
    assert "ok     models: postgresql: models match the migrations" in trusted.stdout


# --- issue 17: an async application on PostgreSQL, a sync one on MariaDB --------------------
# Each installed once per worker and adopted end to end in one test. Versions are pinned: the
# drift asserted below is these releases' own.

PREFECT = "prefect==3.9.1"
MLFLOW = "mlflow-skinny==3.18.0"
PREFECT_PRELOAD = ("prefect.server.database.orm_models", "prefect.server.utilities.database")
MLFLOW_PRELOAD = (
    "mlflow.store.model_registry.dbmodels.models",
    "mlflow.store.tracking.dbmodels.models",
    "mlflow.store.workspace.dbmodels.models",
    "mlflow.store.tracking.dbmodels.initial_models",
)

# Prefect's history creates what its models no longer declare (its real drift, which plain
# Alembic's compare_metadata reports too): lived with through `migrations.compare.ignore`.
PREFECT_DRIFT = [
    "remove_table:deployment_version",
    "remove_index:*deployment_version__*",
    "remove_index:ix_deployment__version_id",
    "remove_column:deployment.version_id",
    "remove_index:ix_flow_run__schedule_id_scheduler",
]

# The README's one-line change, for the runs where the tasks migrate a database of their own
# (autogenerate's and ci.check's throwaway databases): env.py uses the task's connection.
PREFECT_ONE_LINE = (
    "    run_async_from_worker_thread(apply_migrations)",
    "    connection = config.attributes.get('connection', None)\n"
    "    if connection is None:\n"
    "        run_async_from_worker_thread(apply_migrations)\n"
    "    else:\n"
    "        do_run_migrations(connection)",
)


def _package_dir(python: Path, module: str) -> Path:
    """Where `module` is installed, found without importing it: importing Prefect, dagster or
    mlflow takes seconds, and the test only needs the folder."""
    top, *rest = module.split(".")
    where = f"importlib.util.find_spec({top!r}).submodule_search_locations[0]"
    # A process of its own: the fork server would import the application first, with the
    # environment of the moment (Prefect's settings), before the test has set it.
    found = subprocess.run([str(python), "-c", f"import importlib.util; print({where})"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert found.returncode == 0, found.stderr
    return Path(found.stdout.strip().splitlines()[-1]).joinpath(*rest)


def test_prefect_async_on_postgresql_end_to_end(project, pg_url, pg_server, app_venvs,
                                                 tmp_path_factory):  # fmt: skip
    """Prefect's own env.py, unchanged: it builds its own asyncpg engine from
    PREFECT_API_DATABASE_CONNECTION_URL and calls back into the event loop from an AnyIO worker
    thread (`run_async_from_worker_thread`), so plain `alembic upgrade` cannot run it; under
    `migrations.driver: keep` the tasks run it as Prefect does, and the guards attach to its
    connection. Prefect builds a database by running its history from base: that is the trusted
    start here."""
    import sqlalchemy

    python = app_python(
        "prefect", app_venvs, tmp_path_factory.getbasetemp(), PREFECT, PREFECT_PRELOAD
    )
    database = _package_dir(python, "prefect.server.database")
    url = pg_url.replace("+psycopg2", "+asyncpg")
    project.setenv("PYTHONPATH", str(ROOT))
    project.setenv("PREFECT_HOME", str(project.tmp / "prefect-home"))
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    project.setenv("PREFECT_API_DATABASE_CONNECTION_URL", url)
    project.setenv("INVOKE_MIGRATIONS_DRIVER", "keep")
    project.setenv("INVOKE_MIGRATIONS_METADATA", "prefect.server.database.orm_models:Base.metadata")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(database / "alembic.ini"))
    # Prefect keeps one folder of revisions per dialect; its env.py picks one at run time.
    project.setenv(
        "INVOKE_MIGRATIONS_VERSION_LOCATIONS",
        "prefect:server/database/_migrations/versions/postgresql",
    )
    # Prefect's env.py passes no compare_server_default: Alembic's own default, off.
    project.setenv("INVOKE_MIGRATIONS_COMPARE_COMPARE_SERVER_DEFAULT", "false")

    assert "no revision applied (base)" in invoke(python, "dev.current").stdout
    plan = invoke(python, "dev.plan")
    assert_ok(plan)
    assert "120 revisions" in plan.stdout
    assert_ok(invoke(python, "dev.upgrade", "--yes"))
    assert "at head" in invoke(python, "dev.current").stdout

    # Exactly the application's real drift, then nothing once it is lived with.
    drift = invoke(python, "dev.check")
    assert drift.code == ExitCode.DIFFERENCES, drift.output
    assert "9 differences" in drift.output and "remove_table deployment_version" in drift.output
    project.setenv("INVOKE_MIGRATIONS_COMPARE_IGNORE", ",".join(PREFECT_DRIFT))
    assert_ok(invoke(python, "dev.check"))

    assert_ok(invoke(python, "dev.downgrade", "--rev", "-1", "--yes"))
    assert "behind head by 1 revision" in invoke(python, "dev.current").stdout
    assert_ok(invoke(python, "dev.upgrade"))
    assert "at head" in invoke(python, "dev.current").stdout

    # Autogenerate and ci.check migrate throwaway databases, which Prefect's own engine does
    # not reach: the tasks refuse that in one line, and the README's one-line change fixes it.
    refused = invoke(python, "dev.revision", "--autogenerate", "--message", "probe")
    assert_one_line_error(refused, ExitCode.FAILED, "does not build", "not the task's")
    migrations = project.tmp / "prefect_migrations"
    shutil.copytree(database / "_migrations", migrations)
    env_py = migrations / "env.py"
    env_py.write_text(env_py.read_text().replace(*PREFECT_ONE_LINE))
    (migrations / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s\nversion_locations = %(here)s/versions/postgresql\n"
    )
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(migrations / "alembic.ini"))
    project.monkeypatch.delenv("INVOKE_MIGRATIONS_VERSION_LOCATIONS")
    nothing = invoke(python, "dev.revision", "--autogenerate", "--message", "probe")
    assert_ok(nothing)
    assert "no revision written" in nothing.stdout
    assert not list((migrations / "versions" / "postgresql").glob("*probe*"))

    head = invoke(python, "dev.heads").stdout.split()[0]
    project.setenv("INVOKE_MIGRATIONS_CI_SINCE", head)
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "postgresql")
    project.setenv(
        "INVOKE_MIGRATIONS_CI_POSTGRES_URL", pg_server.url.render_as_string(hide_password=False)
    )
    checked = invoke(python, "ci.check")
    assert_ok(checked)
    assert "ok     models: postgresql: models match the migrations" in checked.stdout

    # local.sync from empty. Prefect's models declare `ix_artifact__key` both by `index=True`
    # and by an explicit Index (sync creates it once), and their trigram indexes as plain
    # `postgresql_using="gin"` with no operator class, which PostgreSQL refuses on varchar
    # (an upstream bug: Prefect's history creates them with gin_trgm_ops, and never builds
    # from its models): one line naming the statement, nothing changed. Ignored (check never
    # reports them on the migrated database either), sync converges, twice.
    local_name = f"{sqlalchemy.make_url(pg_url).database}_local"
    local = create_pg_database(pg_server, local_name).replace("+psycopg2", "+asyncpg")
    try:
        project.setenv("DATABASE_URL_LOCAL", local)
        refused = invoke_local(python, "local.sync")
        assert_one_line_error(
            refused, ExitCode.FAILED, "CREATE INDEX trgm_ix_", "gin", "nothing was changed"
        )
        project.setenv(
            "INVOKE_MIGRATIONS_COMPARE_IGNORE", ",".join([*PREFECT_DRIFT, "add_index:trgm_ix_*"])
        )
        assert_local_sync_converges(python)
    finally:
        drop_pg_database(pg_server, local_name)


# mlflow's models import into one declarative Base across three modules; its env.py reads
# `Base.metadata` without importing them (mlflow's own code imports them first).
MLFLOW_MODELS = (
    "import mlflow.store.model_registry.dbmodels.models  # noqa: F401\n"
    "import mlflow.store.tracking.dbmodels.models  # noqa: F401\n"
    "import mlflow.store.workspace.dbmodels.models  # noqa: F401\n"
    "from mlflow.store.db.base_sql_model import Base\n\n"
    "METADATA = Base.metadata\n"
)

# mlflow's own tooling (`mlflow.store.db.utils._initialize_tables`): the initial models'
# create_all, no stamp, then its whole history from base. That is the trusted start here.
MLFLOW_INITIAL = """
import os, sqlalchemy
from mlflow.store.tracking.dbmodels.initial_models import Base
engine = sqlalchemy.create_engine(os.environ["DATABASE_URL_DEVELOPMENT"])
Base.metadata.create_all(engine)
engine.dispose()
"""

# What mlflow 3.18.0's models say and its history builds differently on MariaDB (plain
# Alembic's compare_metadata reports each too): lived with through `migrations.compare.ignore`.
MLFLOW_DRIFT = [
    # Columns the history types, defaults or nulls otherwise than the models.
    "modify_type:assessments.assessment_type",
    "modify_type:datasets.dataset_schema",
    "modify_type:datasets.dataset_profile",
    "modify_type:runs.status",
    "modify_type:spans.content",
    "modify_default:endpoint_model_mappings.linkage_type",
    "modify_default:endpoints.usage_tracking",
    "modify_default:metrics.step",
    "modify_default:metrics.is_nan",
    "modify_default:webhooks.status",
    "modify_nullable:jobs.job_name",
    # Indexes and a foreign key the history creates that the models no longer declare, or
    # the other way round.
    "remove_index:idx_experiments_workspace",
    "remove_index:idx_experiments_workspace_creation_time",
    "remove_index:idx_model_version_tags_workspace_name_version",
    "remove_index:idx_registered_model_tags_workspace_name",
    "remove_index:idx_registered_models_workspace",
    "add_index:index_issues_created_by",
    "add_fk:input_tags.*",
    # `Index("idx_mcp_server_versions_latest", ..., text("version_major DESC"), ...)`: the
    # history creates a narrower index on MySQL.
    "remove_index:idx_mcp_server_versions_latest",
    "add_index:idx_mcp_server_versions_latest",
    # `Index(f"index_{__tablename__}_request_id")` with no column (an upstream bug: no
    # database accepts it); the history's index has request_id.
    "remove_index:index_trace_request_metadata_request_id",
    "add_index:index_trace_request_metadata_request_id",
    "remove_index:index_trace_tags_request_id",
    "add_index:index_trace_tags_request_id",
]


def _create_mysql_database(url: str, name: str, *, drop: bool = False) -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            verb = "DROP DATABASE IF EXISTS" if drop else "CREATE DATABASE"
            connection.execute(sqlalchemy.text(f"{verb} `{name}`"))
    finally:
        engine.dispose()
    return engine.url.set(database=name).render_as_string(hide_password=False)


@pytest.mark.mysql
def test_mlflow_on_mariadb_end_to_end(project, mysql_url, app_venvs, tmp_path_factory):
    """mlflow-skinny's own alembic.ini and env.py, unchanged, on MariaDB. Its env.py opens a
    new connection from `config.attributes["connection"].engine` (the tasks' identity check
    follows it); its wheel has no script.py.mako (autogenerate falls back to Alembic's generic
    template); its models declare a column-less index (lived with by `compare.ignore`, which
    `local.sync` honours too)."""
    import sqlalchemy

    python = app_python("mlflow", app_venvs, tmp_path_factory.getbasetemp(), MLFLOW, MLFLOW_PRELOAD)
    package = _package_dir(python, "mlflow")
    versions = package / "store" / "db_migrations" / "versions"
    shims = project.tmp / "shims"
    shims.mkdir()
    (shims / "mlflow_models.py").write_text(MLFLOW_MODELS)
    project.setenv("PYTHONPATH", f"{ROOT}:{shims}")
    project.setenv("DATABASE_URL_DEVELOPMENT", mysql_url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", "mlflow_models:METADATA")
    project.setenv(
        "INVOKE_MIGRATIONS_ALEMBIC_INI", str(package / "store" / "db_migrations" / "alembic.ini")
    )
    # The ini's `script_location = mlflow/store/db_migrations` is relative to the current
    # directory (mlflow's source tree); installed, the folder is a package resource.
    project.setenv("INVOKE_MIGRATIONS_SCRIPT_LOCATION", "mlflow:store/db_migrations")

    assert run(python, "-c", MLFLOW_INITIAL).code == 0
    assert "no revision applied (base)" in invoke(python, "dev.current").stdout
    plan = invoke(python, "dev.plan")
    assert_ok(plan)
    assert "70 revisions" in plan.stdout
    assert_ok(invoke(python, "dev.upgrade", "--yes"))
    assert "at head" in invoke(python, "dev.current").stdout

    # Default settings: mlflow's Computed and Identity columns compare without a crash, a
    # boolean default stored as 0 is no difference, and the rest is mlflow's real drift.
    drift = invoke(python, "dev.check")
    assert "Traceback" not in drift.output and "has no attribute" not in drift.output
    assert drift.code == ExitCode.DIFFERENCES, drift.output
    assert f"{len(MLFLOW_DRIFT)} differences" in drift.output
    assert "is_numeric_value" not in drift.output
    project.setenv("INVOKE_MIGRATIONS_COMPARE_IGNORE", ",".join(MLFLOW_DRIFT))
    assert_ok(invoke(python, "dev.check"))

    # Autogenerate: the history cannot be built on a throwaway MariaDB database for it, so it
    # compares with the live one; nothing to write, then a real change written from Alembic's
    # generic template (the wheel has no script.py.mako).
    before = set(versions.glob("*.py"))
    nothing = invoke(python, "dev.revision", "--autogenerate", "--against-database", "-m", "probe")
    assert_ok(nothing)
    assert "no revision written" in nothing.stdout
    assert set(versions.glob("*.py")) == before
    engine = sqlalchemy.create_engine(mysql_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE runs ADD COLUMN adoption_note text")
    written = invoke(python, "dev.revision", "--autogenerate", "--against-database", "-m", "note")
    new = set(versions.glob("*.py")) - before
    for path in new:  # the virtualenv is shared by the session: leave mlflow's history as it was
        path.unlink()
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE runs DROP COLUMN adoption_note")
    engine.dispose()
    assert_ok(written)
    assert "has no script.py.mako: Alembic's generic template is used" in written.stdout
    assert len(new) == 1 and "remove_column runs.adoption_note" in written.stdout

    assert_ok(invoke(python, "dev.downgrade", "--rev", "-1", "--yes"))
    assert "behind head by 1 revision" in invoke(python, "dev.current").stdout
    assert_ok(invoke(python, "dev.upgrade"))
    assert "at head" in invoke(python, "dev.current").stdout

    # local.sync from empty converges, twice (the ignored column-less index left out).
    local_name = f"{sqlalchemy.make_url(mysql_url).database}_local"
    local = _create_mysql_database(mysql_url, local_name)
    try:
        project.setenv("DATABASE_URL_LOCAL", local)
        assert_local_sync_converges(python)
    finally:
        _create_mysql_database(mysql_url, local_name, drop=True)
    # ...and on a SQLite file, mlflow's own default database.
    project.setenv("DATABASE_URL_LOCAL", f"sqlite:///{project.tmp / 'mlflow-local.sqlite3'}")
    assert_local_sync_converges(python)

    # ci.check with the README's settings: mlflow's history does not build from an empty
    # database (its first revision alters the initial tables), said in one line naming the
    # trusted revision; with ci.since_schema (mariadb-dump --no-data of the database its own
    # tooling built) it passes.
    head = invoke(python, "dev.heads").stdout.split()[0]
    server = sqlalchemy.make_url(mysql_url)
    project.setenv("INVOKE_MIGRATIONS_CI_SINCE", head)
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "mysql")
    project.setenv(
        "INVOKE_MIGRATIONS_CI_MYSQL_URL",
        server.set(drivername="mysql", database="mysql").render_as_string(hide_password=False),
    )
    checked = invoke(python, "ci.check")
    assert_one_line_error(checked, ExitCode.CI_STAIRWAY, "ci.check: 2 checks failed", head)
    assert f"trusted history up to {head} (ci.since) does not build" in checked.output
    assert "metrics' doesn't exist" in checked.output

    schema = project.tmp / "schema-at-head.sql"
    tool_tables = [f"--ignore-table={server.database}.{table}" for table in sorted(TOOL_TABLES)]
    with schema.open("w") as out:
        dumped = subprocess.run(
            ["mariadb-dump", f"--host={server.host}", f"--port={server.port or 3306}",
             f"--user={server.username}", "--no-data", "--skip-comments", *tool_tables,
             str(server.database)],
            stdout=out, stderr=subprocess.PIPE, text=True, check=False,
        )  # fmt: skip
    assert dumped.returncode == 0, dumped.stderr
    project.setenv("INVOKE_MIGRATIONS_CI_SINCE_SCHEMA", str(schema))
    trusted = invoke(python, "ci.check")
    assert_ok(trusted)
    assert f"older revisions trusted: ci.since {head}" in trusted.stdout
    assert "ok     models: mysql: models match the migrations" in trusted.stdout
