"""Issue 18.4: claims the README makes, held true as users run the tasks (subprocesses)."""

from __future__ import annotations

import pytest

from tasks.core.errors import ExitCode
from tests.helpers import FIRST, HEAD, assert_ok, assert_one_line_error


@pytest.mark.parametrize("task", ["current", "check", "plan", "audit", "preflight", "backup"])
def test_a_read_never_creates_a_missing_sqlite_file(project, tmp_path, task):
    mistyped = tmp_path / "typo.sqlite3"
    project.setenv("DATABASE_URL_LOCAL", f"sqlite:///{mistyped}")

    result = project.invoke_subprocess(f"local.{task}")

    assert_one_line_error(result, ExitCode.USAGE, str(mistyped), "does not exist")
    assert not mistyped.exists()


def test_migrations_operator_from_dotenv_names_the_operator(project, tmp_path):
    project.monkeypatch.delenv("MIGRATIONS_OPERATOR")
    (project.dotenv_dir / ".env").write_text("MIGRATIONS_OPERATOR=from-dotenv@example.com\n")

    result = project.invoke_subprocess("local.upgrade")

    assert_ok(result)
    operators = {record.get("operator") for record in project.log_records()}
    assert operators == {"from-dotenv@example.com"}, operators


def test_the_process_environment_wins_over_dotenv(project):
    (project.dotenv_dir / ".env").write_text("MIGRATIONS_OPERATOR=from-dotenv@example.com\n")

    assert_ok(project.invoke_subprocess("local.upgrade"))

    assert {record.get("operator") for record in project.log_records()} == {"tester@example.com"}


@pytest.mark.parametrize(
    "rev, expected",
    [("head-1", FIRST), ("head~1", FIRST), (f"{HEAD}-1", FIRST), ("base+2", HEAD)],
)
def test_show_takes_relative_forms(project, rev, expected):
    result = project.invoke_subprocess("dev.show", "-r", rev)

    assert_ok(result)
    assert result.stdout.splitlines()[0].split()[2] == expected


def test_show_past_base_is_one_line(project):
    result = project.invoke_subprocess("dev.show", "-r", "head-5")

    assert_one_line_error(result, ExitCode.USAGE, "'head-5'", "past head or base")


def test_heads_marks_the_current_revision(project):
    assert_ok(project.invoke("local.upgrade"))

    result = project.invoke_subprocess("local.heads")

    assert_ok(result)
    assert result.stdout.startswith(f"{HEAD} (head, current)")


def test_heads_names_a_current_revision_that_is_not_a_head(project):
    assert_ok(project.invoke("local.upgrade", "-r", FIRST))

    result = project.invoke_subprocess("local.heads")

    assert_ok(result)
    assert f"{HEAD} (head) " in result.stdout
    assert f"local database: {FIRST} (current, not a head)" in result.stdout


def test_a_misspelt_setting_variable_is_an_error_naming_the_closest(project):
    project.setenv("INVOKE_MIGRATIONS_ENVIRONMENTS_PRODUCTION_PROTECTD", "false")

    result = project.invoke_subprocess("prod.heads")

    assert_one_line_error(
        result,
        ExitCode.USAGE,
        "INVOKE_MIGRATIONS_ENVIRONMENTS_PRODUCTION_PROTECTD",
        "did you mean INVOKE_MIGRATIONS_ENVIRONMENTS_PRODUCTION_PROTECTED?",
    )
