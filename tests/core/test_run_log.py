"""The structured run log: JSON lines appended per run, with the fields the issue lists, for runs
that succeed, are refused and fail; an unwritable log stops the task before any change."""

from __future__ import annotations

import json
import socket
from datetime import datetime

import pytest

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import (
    FIRST,
    HEAD,
    assert_ok,
    assert_one_line_error,
    prepare,
    sqlite_url,
)

REQUIRED = {
    "timestamp",
    "environment",
    "task",
    "arguments",
    "operator",
    "host",
    "database",
    "revision_before",
    "revision_after",
    "duration_ms",
    "outcome",
    "error",
}


@pytest.fixture
def dev(project):
    url = prepare(project, sqlite_url(project.tmp / "dev.sqlite3"), FIRST)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    return url


def finished(project) -> dict:
    records = [r for r in project.log_records() if "outcome" in r]
    assert records, "no finished record in the run log"
    return records[-1]


def test_successful_run_is_logged_with_every_field(project, dev):
    before = len(project.log_records())

    assert_ok(project.invoke("dev.upgrade", "--rev", "head"))

    new = project.log_records()[before:]
    assert new, "the run appended nothing"
    record = new[-1]
    assert set(record) >= REQUIRED, REQUIRED - set(record)
    assert record["environment"] == "development"
    assert record["task"] == "dev.upgrade"
    assert record["arguments"]["rev"] == "head"
    assert record["operator"] == "tester@example.com"
    assert record["host"] == socket.gethostname()
    assert record["database"] == dev
    assert record["revision_before"] == [FIRST]
    assert record["revision_after"] == [HEAD]
    assert isinstance(record["duration_ms"], int | float) and record["duration_ms"] >= 0
    assert record["outcome"] == "ok"
    assert record["error"] is None
    stamp = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    assert stamp.tzinfo is not None


def test_every_line_is_json_and_runs_append(project, dev):
    project.log_file.parent.mkdir(parents=True, exist_ok=True)
    project.log_file.write_text('{"earlier": "run"}\n')

    assert_ok(project.invoke("dev.current"))
    assert_ok(project.invoke("dev.heads"))

    lines = project.log_file.read_text().splitlines()
    assert lines[0] == '{"earlier": "run"}'
    records = [json.loads(line) for line in lines]  # every line parses
    tasks = [r.get("task") for r in records if r.get("outcome")]
    assert tasks == ["dev.current", "dev.heads"]


def test_console_gets_readable_lines_not_json(project, dev):
    result = project.invoke("dev.current")

    assert_ok(result)
    for line in result.stdout.splitlines():
        assert not line.lstrip().startswith("{"), line


def test_masked_database_url_in_the_log(project, pg_url):
    _driver, rest = pg_url.split("://", 1)
    user_at = rest.split("@", 1)
    url = f"postgresql://{user_at[0].split(':')[0]}:LogS3cretPw@{user_at[1]}"
    project.setenv("DATABASE_URL_DEVELOPMENT", url)

    assert_ok(project.invoke("dev.current"))

    record = finished(project)
    assert ":***@" in record["database"]
    assert "LogS3cretPw" not in project.log_file.read_text()


def test_refused_run_is_logged(project, dev):
    project.setenv("INVOKE_MIGRATIONS_OWNERS", "lead@example.com")

    result = project.invoke("dev.upgrade")

    assert result.code == ExitCode.REFUSED
    record = finished(project)
    assert record["outcome"] == "refused"
    assert "lead@example.com" in record["error"]
    assert record["revision_after"] in (None, [FIRST])


def test_failed_run_is_logged(project):
    project.setenv("DATABASE_URL_DEVELOPMENT", "postgresql://postgres@127.0.0.1:9/nowhere")

    result = project.invoke("dev.upgrade")

    assert result.code == ExitCode.FAILED
    record = finished(project)
    assert record["outcome"] == "failed"
    assert "cannot connect" in record["error"]
    assert record["database"] == "postgresql+psycopg2://postgres@127.0.0.1:9/nowhere"


def test_configuration_error_is_logged_as_failed(project):
    result = project.invoke("staging.current")

    assert result.code == ExitCode.USAGE
    record = finished(project)
    assert record["outcome"] == "failed"
    assert "DATABASE_URL_STAGING" in record["error"]
    assert record["task"] == "staging.current"


def test_log_file_is_configurable(project, dev, tmp_path):
    other = tmp_path / "elsewhere" / "runs.jsonl"
    project.setenv("INVOKE_MIGRATIONS_LOG_FILE", str(other))
    default_log = project.log_records()

    assert_ok(project.invoke("dev.current"))

    assert json.loads(other.read_text().splitlines()[-1])["task"] == "dev.current"
    assert project.log_records() == default_log


def test_unwritable_log_directory_stops_the_task_before_any_change(project, dev, tmp_path):
    """The log's directory is a plain file, which even root cannot write into."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    project.setenv("INVOKE_MIGRATIONS_LOG_FILE", str(blocker / "migrations.jsonl"))
    before = schema_snapshot(dev)

    result = project.invoke("dev.upgrade")

    assert_one_line_error(result, ExitCode.USAGE, "log", str(blocker))
    assert schema_snapshot(dev) == before


def test_unwritable_log_file_stops_the_task(project, dev, tmp_path):
    """The log path itself is a directory."""
    directory = tmp_path / "log-is-a-dir.jsonl"
    directory.mkdir()
    project.setenv("INVOKE_MIGRATIONS_LOG_FILE", str(directory))
    before = schema_snapshot(dev)

    result = project.invoke("dev.upgrade")

    assert_one_line_error(result, ExitCode.USAGE, "log")
    assert schema_snapshot(dev) == before
