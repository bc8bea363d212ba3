"""An adopted env.py keeps every guarantee (issue 17): autogenerate, blame, the database it
migrates. Each test writes a small application with its own env.py (`tests/adopt/apps.py`) and
drives the tasks through a subprocess `invoke`."""

from __future__ import annotations

import pytest

from tasks.core.errors import ExitCode
from tests.adopt.apps import make_shop, revision_files
from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, assert_one_line_error, sqlite_url, table_names, version_rows

SHOP_TABLES = {"users", "addresses", "orders"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def dev_url(request, project) -> str:
    url = (
        sqlite_url(project.tmp / "dev.sqlite3")
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    return url


# --- autogenerate ---------------------------------------------------------------------------


@pytest.mark.parametrize("env_kind", ["sync", "cookbook"])
def test_autogenerate_on_a_matching_database_writes_nothing(project, dev_url, env_kind):
    """The audit table exists (dev is shared) and the team's env.py has no filter for it:
    autogenerate neither drops it nor writes an empty revision."""
    shop = make_shop(project, env_kind)
    assert_ok(project.invoke_subprocess("dev.upgrade"))
    assert "migration_audit" in set(schema_snapshot(dev_url)) | _all_tables(dev_url)
    before = revision_files(shop)

    result = project.invoke_subprocess(
        "dev.revision", "-m", "nothing", "--autogenerate", "--against-database"
    )

    assert_ok(result)
    assert "no changes between the models and the database: no revision written" in result.stdout
    assert revision_files(shop) == before


def test_autogenerate_writes_the_real_change_and_not_the_tasks_tables(project, dev_url):
    shop = make_shop(project, "sync")
    assert_ok(project.invoke_subprocess("dev.upgrade"))
    models = shop.folder / "models.py"
    models.write_text(
        models.read_text().replace(
            "    name = Column(String(50), nullable=False)\n",
            "    name = Column(String(50), nullable=False)\n    nickname = Column(String(30))\n",
        )
    )
    before = revision_files(shop)

    result = project.invoke_subprocess(
        "dev.revision", "-m", "nickname", "--autogenerate", "--against-database"
    )

    assert_ok(result)
    [new] = revision_files(shop) - before
    text = (shop.versions / new).read_text()
    assert "nickname" in text
    assert "migration_audit" not in text and "alembic_version" not in text
    assert_ok(project.invoke_subprocess("dev.upgrade"))
    assert_ok(project.invoke_subprocess("dev.check"))


def _all_tables(url: str) -> set[str]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return set(sqlalchemy.inspect(connection).get_table_names())
    finally:
        engine.dispose()


# --- blame ----------------------------------------------------------------------------------


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def any_dev_url(request, project) -> str:
    if request.param == "sqlite":
        url = sqlite_url(project.tmp / "dev.sqlite3")
    elif request.param == "mysql":
        url = request.getfixturevalue("mysql_url")
    else:
        url = request.getfixturevalue("pg_url")
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    return url


def test_the_revision_that_failed_is_blamed(project, any_dev_url):
    """Three good revisions, then one that creates a table and fails: the error names the
    fourth, the database stays at the third, and on MariaDB the residue report lists only
    the fourth's table (following it must not drop the good ones)."""
    shop = make_shop(project, "sync")
    failing = shop.add_failing_revision()

    result = project.invoke_subprocess("dev.upgrade")

    line = assert_one_line_error(result, ExitCode.FAILED, f"revision {failing} failed")
    assert "a1a1a1a1a1a1 failed" not in line
    snapshot = schema_snapshot(any_dev_url)
    assert version_rows(snapshot) == ["a3a3a3a3a3a3"]
    assert table_names(snapshot) >= SHOP_TABLES
    if any_dev_url.startswith("mysql"):
        assert "notes" in line
        for good in SHOP_TABLES:
            assert f"table {good}" not in line
            assert f"DROP TABLE `{good}`" not in result.stdout
        assert "DROP TABLE `notes`" in result.stdout
        assert "invoke dev.stamp --rev a4a4a4a4a4a4" in line
    else:
        assert "notes" not in table_names(snapshot)


# --- the database env.py migrates -----------------------------------------------------------


def test_env_py_with_its_own_engine_is_refused_before_anything_runs(project, dev_url):
    """env.py builds its engine from the application's settings, which name another
    database: exit 2, one line naming env.py and both databases; neither database changed."""
    make_shop(project, "own_engine")
    elsewhere = project.tmp / "application-default.sqlite3"
    project.setenv("SHOP_DATABASE_URL", sqlite_url(elsewhere))
    before = schema_snapshot(dev_url)

    result = project.invoke_subprocess("dev.upgrade")

    line = assert_one_line_error(
        result, ExitCode.USAGE, "env.py", "migrates", "nothing was changed"
    )
    assert "application-default.sqlite3" in line and "development" in line
    assert schema_snapshot(dev_url) == before
    assert not elsewhere.exists() or _all_tables(sqlite_url(elsewhere)) == set()


def test_the_readme_one_line_change_makes_it_run(project, dev_url):
    make_shop(project, "own_engine_fixed")
    project.setenv("SHOP_DATABASE_URL", sqlite_url(project.tmp / "application-default.sqlite3"))

    assert_ok(project.invoke_subprocess("dev.upgrade"))

    assert version_rows(schema_snapshot(dev_url)) == ["a3a3a3a3a3a3"]
    assert not (project.tmp / "application-default.sqlite3").exists()


# --- local.sync through the adopted path ----------------------------------------------------


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def local_url(request, project) -> str:
    if request.param == "sqlite":
        url = sqlite_url(project.tmp / "local.sqlite3")
    elif request.param == "mysql":
        url = request.getfixturevalue("mysql_url")
    else:
        url = request.getfixturevalue("pg_url")
    project.setenv("DATABASE_URL_LOCAL", url)
    return url


def test_sync_through_the_adopted_env_py_creates_tables_in_key_order(project, local_url):
    """The env.py's include_object sends sync through Alembic's comparison; `addresses`
    (alphabetically first) refers to `users`: tables are created users first, and a second
    sync finds nothing to do."""
    make_shop(project, "sync")

    first = project.invoke_subprocess("local.sync")
    assert_ok(first)
    assert table_names(schema_snapshot(local_url)) >= SHOP_TABLES

    second = project.invoke_subprocess("local.sync")
    assert_ok(second)
    assert "in sync" in second.stdout


def test_env_py_opening_its_own_connection_from_the_shared_engine(project, dev_url):
    """mlflow's env.py: `config.attributes["connection"].engine.connect()`, a second connection
    from the task's engine (on SQLite it was given a second BEGIN: "cannot start a transaction
    within a transaction"). Upgrade, check and a sync through it work, on its connection."""
    shop = make_shop(project, "shared_engine")
    assert "shared.engine" in (shop.folder / "migrations" / "env.py").read_text()

    assert_ok(project.invoke_subprocess("dev.upgrade"))
    assert version_rows(schema_snapshot(dev_url)) == ["a3a3a3a3a3a3"]
    assert_ok(project.invoke_subprocess("dev.check"))
    project.setenv("DATABASE_URL_LOCAL", sqlite_url(project.tmp / "local.sqlite3"))
    project.monkeypatch.delenv("DATABASE_URL_DEVELOPMENT")
    assert_ok(project.invoke_subprocess("local.sync"))
    assert_ok(project.invoke_subprocess("local.sync", "--check"))
