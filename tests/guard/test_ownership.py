"""The ownership policy: with owners configured, only they create revisions or change a dev,
staging or production database; local work and read-only tasks are never restricted."""

from __future__ import annotations

import pytest

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import (
    FIRST,
    HEAD,
    assert_ok,
    assert_one_line_error,
    copy_scripts,
    prepare,
    sqlite_url,
    version_rows,
)

OWNERS = "lead@example.com,Ops@Example.com"


@pytest.fixture
def databases(project):
    """One SQLite file per environment, each at the first revision; owners configured."""
    urls = {}
    for collection, variable in [
        ("local", "LOCAL"),
        ("dev", "DEVELOPMENT"),
        ("staging", "STAGING"),
        ("prod", "PRODUCTION"),
    ]:
        url = prepare(project, sqlite_url(project.tmp / f"{collection}.sqlite3"), FIRST)
        project.setenv(f"DATABASE_URL_{variable}", url)
        urls[collection] = url
    project.setenv("INVOKE_MIGRATIONS_OWNERS", OWNERS)
    return urls


@pytest.fixture
def scripts(project):
    """Private revision scripts, so a revision that slips through never lands in the repository."""
    copy = copy_scripts(project.tmp / "scripts")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    return copy


CHANGES = [
    ("dev", ("upgrade",)),
    ("dev", ("downgrade", "--rev", "base", "--yes")),
    ("dev", ("stamp", "--rev", HEAD, "--yes")),
    ("staging", ("upgrade",)),
    ("staging", ("downgrade", "--rev", "base", "--yes")),
    ("staging", ("stamp", "--rev", HEAD, "--yes")),
    ("prod", ("upgrade", "--yes")),
    ("prod", ("downgrade", "--rev", "base", "--yes")),
    ("prod", ("stamp", "--rev", HEAD, "--yes")),
]


@pytest.mark.parametrize(("collection", "argv"), CHANGES, ids=lambda v: str(v))
def test_non_owner_is_refused_on_shared_databases(project, databases, collection, argv):
    project.setenv("MIGRATIONS_OPERATOR", "intern@example.com")
    before = schema_snapshot(databases[collection])

    result = project.invoke(f"{collection}.{argv[0]}", *argv[1:])

    line = assert_one_line_error(result, ExitCode.REFUSED, "intern@example.com")
    assert "lead@example.com" in line and "ops@example.com" in line.lower()
    assert schema_snapshot(databases[collection]) == before
    assert project.log_records()[-1]["outcome"] == "refused"


@pytest.mark.parametrize("collection", ["dev", "local"])
def test_non_owner_cannot_write_a_revision_even_locally(project, databases, scripts, collection):
    prepare(project, databases[collection], HEAD)
    project.setenv("MIGRATIONS_OPERATOR", "intern@example.com")
    files = scripts.files()

    result = project.invoke(f"{collection}.revision", "-m", "sneaky", "--autogenerate")

    assert_one_line_error(result, ExitCode.REFUSED, "lead@example.com", "intern@example.com")
    assert scripts.files() == files


@pytest.mark.parametrize("operator", ["lead@example.com", "OPS@example.com", " lead@example.com "])
def test_owner_is_allowed(project, databases, operator):
    project.setenv("MIGRATIONS_OPERATOR", operator)

    assert_ok(project.invoke("dev.upgrade"))
    assert_ok(project.invoke("staging.stamp", "--rev", HEAD, "--yes"))

    assert version_rows(schema_snapshot(databases["dev"])) == [HEAD]
    assert version_rows(schema_snapshot(databases["staging"])) == [HEAD]


def test_owner_may_write_a_revision(project, databases, scripts):
    project.setenv("MIGRATIONS_OPERATOR", "lead@example.com")
    assert_ok(project.invoke("dev.upgrade"))
    files = scripts.files()

    result = project.invoke("dev.revision", "-m", "an empty one")

    assert_ok(result)
    assert len(scripts.files() - files) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ("local.upgrade",),
        ("local.downgrade", "--rev", "base", "--yes"),
        ("local.stamp", "--rev", HEAD, "--yes"),
        ("local.sync",),
    ],
)
def test_local_changes_are_never_restricted(project, databases, argv):
    project.setenv("MIGRATIONS_OPERATOR", "intern@example.com")
    before = schema_snapshot(databases["local"])

    assert_ok(project.invoke(*argv))

    assert schema_snapshot(databases["local"]) != before


@pytest.mark.parametrize("collection", ["dev", "staging", "prod"])
@pytest.mark.parametrize(
    "argv", [("current",), ("history",), ("heads",), ("upgrade", "--sql", "--rev", f"{FIRST}:head")]
)
def test_read_only_tasks_are_never_restricted(project, databases, collection, argv):
    project.setenv("MIGRATIONS_OPERATOR", "intern@example.com")

    result = project.invoke(f"{collection}.{argv[0]}", *argv[1:])

    assert_ok(result)


def test_check_is_never_restricted(project, databases):
    """`check` is read-only: it reports differences (exit 4 here, one revision behind)."""
    project.setenv("MIGRATIONS_OPERATOR", "intern@example.com")

    result = project.invoke("prod.check")

    assert result.code == ExitCode.DIFFERENCES, result.output


def test_no_owners_means_nobody_is_restricted(project, databases):
    project.monkeypatch.delenv("INVOKE_MIGRATIONS_OWNERS")
    project.setenv("MIGRATIONS_OPERATOR", "intern@example.com")

    assert_ok(project.invoke("dev.upgrade"))


def test_operator_falls_back_to_git_user_email(project, databases):
    """Without MIGRATIONS_OPERATOR the operator is `git config user.email` (here set through
    git's own GIT_CONFIG_* variables, which outrank every config file)."""
    project.monkeypatch.delenv("MIGRATIONS_OPERATOR")
    project.setenv("GIT_CONFIG_COUNT", "1")
    project.setenv("GIT_CONFIG_KEY_0", "user.email")
    project.setenv("GIT_CONFIG_VALUE_0", "lead@example.com")

    assert_ok(project.invoke("dev.upgrade"))
    assert project.log_records()[-1]["operator"] == "lead@example.com"

    project.setenv("GIT_CONFIG_VALUE_0", "someone@else.example")
    result = project.invoke("staging.upgrade")
    assert_one_line_error(result, ExitCode.REFUSED, "someone@else.example", "lead@example.com")


def test_owners_as_a_yaml_list(project, databases, tmp_path):
    project.monkeypatch.delenv("INVOKE_MIGRATIONS_OWNERS")
    config = tmp_path / "owners.yaml"
    config.write_text("migrations:\n  owners:\n    - lead@example.com\n    - ops@example.com\n")
    project.setenv("MIGRATIONS_OPERATOR", "intern@example.com")

    refused = project.invoke("-f", str(config), "dev.upgrade")
    assert_one_line_error(refused, ExitCode.REFUSED, "lead@example.com, ops@example.com")

    project.setenv("MIGRATIONS_OPERATOR", "ops@example.com")
    assert_ok(project.invoke("-f", str(config), "dev.upgrade"))
