"""`ci.check` on an adopted application (issue 17): the models check compares under the
env.py's own options (as `dev.check` does), the stairway and the models check each get a
throwaway database of their own, and the throwaway names carry `ci.database_prefix`."""

from __future__ import annotations

import pytest

from tasks.core.errors import ExitCode
from tests.adopt.apps import make_shop
from tests.helpers import assert_ok, sqlite_url


def _history_default(shop, value: str) -> None:
    """The history builds orders.total with another server default than the models have."""
    path = shop.versions / "a3_orders.py"
    path.write_text(path.read_text().replace('sa.text("0")', f'sa.text("{value}")'))


def test_ci_check_agrees_with_dev_check_under_the_env_py_options(project):
    """env.py compares no server defaults (`compare_server_default=False`); the project's
    default would: a default that differs is no difference to either check."""
    shop = make_shop(project, "sync")
    _history_default(shop, "1")
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(project.tmp / "dev.sqlite3"))
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    assert_ok(project.invoke_subprocess("dev.upgrade"))

    assert_ok(project.invoke_subprocess("dev.check"))
    checked = project.invoke_subprocess("ci.check")

    assert_ok(checked)
    assert "ok     models: sqlite: models match the migrations" in checked.stdout


def test_a_stairway_failure_does_not_fail_the_models_check(project):
    """A downgrade that cannot run stops the stairway half-way; the models check builds the
    whole history on its own database and passes."""
    shop = make_shop(project, "sync")
    path = shop.versions / "a3_orders.py"
    path.write_text(path.read_text().replace('op.drop_table("orders")', 'op.drop_table("nope")'))
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")

    checked = project.invoke_subprocess("ci.check")

    assert checked.code == ExitCode.CI_STAIRWAY, checked.output
    assert "FAILED stairway: sqlite: revision a3a3a3a3a3a3: downgrade" in checked.stdout
    assert "ok     models: sqlite: models match the migrations" in checked.stdout


@pytest.mark.postgres
def test_throwaway_databases_carry_the_prefix(pg_server):
    import sqlalchemy

    from tasks.ci.checks import throwaway_postgres

    options = {
        "postgres_url": pg_server.url.render_as_string(hide_password=False),
        "database_prefix": "team_ci_",
    }
    with throwaway_postgres(options) as url:
        assert url.database.startswith("team_ci_")
        with pg_server.connect() as connection:
            query = sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :name")
            assert connection.execute(query, {"name": url.database}).scalar() == 1
    with pg_server.connect() as connection:
        assert connection.execute(query, {"name": url.database}).scalar() is None


def test_a_bad_prefix_is_a_configuration_error(project):
    make_shop(project, "sync")
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    project.setenv("INVOKE_MIGRATIONS_CI_DATABASE_PREFIX", "Bad-Name")

    refused = project.invoke_subprocess("ci.check")

    assert refused.code == ExitCode.USAGE, refused.output
    assert "migrations.ci.database_prefix" in refused.stderr
