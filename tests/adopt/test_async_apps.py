"""Async applications (issue 17): `migrations.driver: keep` runs migrations on the URL's own
async driver, inside an event loop, through an env.py written to Alembic's async cookbook
(`connection.run_sync`); the default swaps to the installed sync driver and the same env.py
runs on the task's connection."""

from __future__ import annotations

import pytest

from tasks.core.errors import ExitCode
from tests.adopt.apps import make_shop, write_revision
from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, assert_one_line_error, version_rows

pytest.importorskip("asyncpg")
pytest.importorskip("aiosqlite")

# A revision that relies on the driver it runs on, as revisions written for an async
# application can: it says which driver it got.
DRIVER_CHECK = (
    "a4a4a4a4a4a4",
    "a3a3a3a3a3a3",
    """
    import os
    driver = op.get_bind().dialect.driver
    if driver != os.environ["SHOP_EXPECT_DRIVER"]:
        raise RuntimeError(f"ran on {driver}")
""",
    "    pass\n",
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def async_url(request, project) -> tuple[str, str, str]:
    """(async URL, its driver, the sync URL of the same database)."""
    if request.param == "sqlite":
        path = project.tmp / "dev.sqlite3"
        urls = (f"sqlite+aiosqlite:///{path}", "aiosqlite", f"sqlite:///{path}")
    else:
        sync = request.getfixturevalue("pg_url")
        urls = (sync.replace("+psycopg2", "+asyncpg"), "asyncpg", sync)
    project.setenv("DATABASE_URL_DEVELOPMENT", urls[0])
    return urls


def test_keep_runs_the_migrations_on_the_async_driver(project, async_url):
    _url, driver, sync_url = async_url
    shop = make_shop(project, "async")
    write_revision(shop.versions, "a4_driver", *DRIVER_CHECK)
    project.setenv("INVOKE_MIGRATIONS_DRIVER", "keep")
    project.setenv("SHOP_EXPECT_DRIVER", driver)

    assert_ok(project.invoke_subprocess("dev.upgrade"))
    assert version_rows(schema_snapshot(sync_url)) == ["a4a4a4a4a4a4"]
    assert_ok(project.invoke_subprocess("dev.check"))
    assert_ok(project.invoke_subprocess("dev.downgrade", "--rev", "a2a2a2a2a2a2", "--yes"))
    assert version_rows(schema_snapshot(sync_url)) == ["a2a2a2a2a2a2"]
    assert_ok(project.invoke_subprocess("dev.upgrade"))

    # The default swaps the driver: the revision that needs the async one says so, and only it.
    assert_ok(project.invoke_subprocess("dev.downgrade", "--rev", "a3a3a3a3a3a3", "--yes"))
    project.setenv("INVOKE_MIGRATIONS_DRIVER", "sync")
    swapped = project.invoke_subprocess("dev.upgrade")
    assert_one_line_error(swapped, ExitCode.FAILED, "revision a4a4a4a4a4a4 failed", "ran on")


def test_the_async_cookbook_env_py_runs_on_the_default_sync_driver(project, async_url):
    _url, _driver, sync_url = async_url
    make_shop(project, "async")

    assert_ok(project.invoke_subprocess("dev.upgrade"))

    assert version_rows(schema_snapshot(sync_url)) == ["a3a3a3a3a3a3"]
    assert_ok(project.invoke_subprocess("dev.check"))


def test_keep_without_an_async_driver_installed_is_one_line(project, async_url):
    make_shop(project, "async")
    project.setenv("DATABASE_URL_DEVELOPMENT", "postgresql+psycopg_async://u@127.0.0.1/x")
    project.setenv("INVOKE_MIGRATIONS_DRIVER", "keep")

    result = project.invoke_subprocess("dev.current")

    assert_one_line_error(
        result, ExitCode.USAGE, "postgresql+psycopg_async", "pip install psycopg greenlet"
    )


def test_a_bad_driver_setting_is_one_line(project, async_url):
    make_shop(project, "async")
    project.setenv("INVOKE_MIGRATIONS_DRIVER", "async")

    result = project.invoke_subprocess("dev.current")

    assert_one_line_error(result, ExitCode.USAGE, "migrations.driver must be sync or keep")


@pytest.mark.postgres
def test_an_env_py_that_calls_back_into_its_event_loop_runs_under_keep(project, pg_url):
    """Regression (Prefect's env.py): an env.py that runs only in an AnyIO worker thread and
    migrates on its own async engine failed with NoEventLoopError; under `driver: keep` the
    tasks run it in a worker thread of their event loop, on the task's database."""
    pytest.importorskip("anyio")
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url.replace("+psycopg2", "+asyncpg"))
    project.setenv("INVOKE_MIGRATIONS_DRIVER", "keep")
    make_shop(project, "anyio_worker")

    assert_ok(project.invoke_subprocess("dev.upgrade"))
    assert version_rows(schema_snapshot(pg_url)) == ["a3a3a3a3a3a3"]
    assert_ok(project.invoke_subprocess("dev.downgrade", "--rev", "a2a2a2a2a2a2", "--yes"))
    assert version_rows(schema_snapshot(pg_url)) == ["a2a2a2a2a2a2"]
