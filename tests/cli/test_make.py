"""Issue 12.6: make and exit codes. Make turns any failing recipe into its own exit 2 (tested, so
the README's advice to call invoke directly stays true), `make help` says so, and ENV accepts
the environments' long names."""

from __future__ import annotations

import sqlite3

from tests.cli.test_readme_commands import clone, make  # noqa: F401 - `clone` is a fixture


def test_make_collapses_the_task_exit_code_and_invoke_keeps_it(project, clone):  # noqa: F811
    database = project.tmp / "empty.sqlite3"
    sqlite3.connect(database).close()  # an empty database: every model table is missing
    project.setenv("DATABASE_URL_LOCAL", f"sqlite:///{database}")

    through_make = make(clone, "sync-check")
    direct = project.run(
        str(clone.parent / "venv" / "bin" / "invoke"),
        "--search-root",
        str(clone),
        "local.sync",
        "--check",
    )

    assert direct.code == 4, direct.output
    assert through_make.code == 2, through_make.output
    assert "invoke local.sync --check" in through_make.stdout  # the command to run instead


def test_make_help_says_to_call_invoke_where_the_code_matters(project, clone):  # noqa: F811
    result = make(clone, "help")

    assert result.code == 0
    assert "Exit codes: make ends every failure with 2" in result.stdout
    assert "invoke local.sync --check" in result.stdout


def test_env_accepts_the_long_environment_names(project, clone):  # noqa: F811
    for long, collection in (("production", "prod"), ("development", "dev")):
        result = make(clone, "current", f"ENV={long}")

        assert f"invoke {collection}.current" in result.stdout, result.output
        assert "ENV must be one of" not in result.stderr
        variable = f"DATABASE_URL_{long.upper()}"
        assert variable in result.stderr  # the task ran, and says its URL is not set


def test_every_environment_alias_honours_env(project, clone):  # noqa: F811
    """Issue 18.10: aliases for plan, preflight, audit, heads (which ignored ENV), and the
    pipeline and fleet commands; `make -n` prints what each would run."""
    for target in ("current", "history", "heads", "check", "plan", "preflight", "audit"):
        result = make(clone, "-n", target, "ENV=staging")
        assert f"invoke staging.{target}" in result.stdout, (target, result.output)
    assert "invoke ci.check" in make(clone, "-n", "ci").stdout
    assert (
        "invoke fleet.status --fleet=tenants"
        in make(clone, "-n", "fleet-status", "FLEET=tenants").stdout
    )
    upgrade = make(clone, "-n", "fleet-upgrade", "REV=abc", "YES=1").stdout
    assert "invoke fleet.upgrade" in upgrade and "--rev=abc --yes" in upgrade
    assert "invoke local.revision" in make(clone, "-n", "revision", "MSG=x", "ENV=local").stdout


def test_make_sync_then_make_revision_needs_no_development_database(project, clone):  # noqa: F811
    """Issue 18, done when: on a laptop with no dev database, `make sync` then
    `make revision MSG=x` works (autogenerate compares with the history)."""
    project.monkeypatch.delenv("DATABASE_URL_LOCAL")
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")

    synced = make(clone, "sync")
    assert synced.code == 0, synced.output
    assert "recorded revision" in synced.stdout

    revision = make(clone, "revision", "MSG=x")

    assert revision.code == 0, revision.output
    assert "no changes between the models and the history" in revision.stdout
