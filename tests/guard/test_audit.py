"""The audit table inside shared databases: created on first use (also by several runners at the
same moment), one row per attempt with the fields the issue lists, readable with
`<env>.audit [--limit N] [--json]`, never written for local databases, and invisible to
autogenerate and `check`."""

from __future__ import annotations

import json
import threading
from datetime import datetime

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tasks.core.run_log import RunRecord
from tasks.guard.audit import AUDIT_TABLE, record_run
from tests.conftest import ROOT
from tests.guard.test_lock_concurrency import environment_for
from tests.helpers import FIRST, HEAD, assert_ok, assert_one_line_error, prepare, sqlite_url
from tests.revision_chains import repository_chain

FIELDS = {
    "id",
    "started_at",
    "finished_at",
    "duration_ms",
    "environment",
    "task",
    "arguments",
    "operator",
    "host",
    "revision_before",
    "revision_after",
    "outcome",
    "error",
    "git_commit",
}


def rows(project, *argv: str) -> list[dict]:  # type: ignore[no-untyped-def]
    result = project.invoke("dev.audit", "--json", *argv)
    assert_ok(result)
    return json.loads(result.stdout)


def test_every_changing_run_leaves_a_row_with_every_field(project, dev):
    assert_ok(project.invoke("dev.upgrade", "--rev", FIRST))
    assert_ok(project.invoke("dev.current"))  # read-only: not audited
    assert_ok(project.invoke("dev.upgrade"))
    assert_ok(project.invoke("dev.stamp", "--rev", FIRST, "--yes"))

    stamp, upgrade, first = rows(project)

    assert set(first) == FIELDS
    assert [first["task"], upgrade["task"], stamp["task"]] == [
        "dev.upgrade",
        "dev.upgrade",
        "dev.stamp",
    ]
    assert (first["revision_before"] or None, first["revision_after"]) == (None, FIRST)
    assert (upgrade["revision_before"], upgrade["revision_after"]) == (FIRST, HEAD)
    assert (stamp["revision_before"], stamp["revision_after"]) == (HEAD, FIRST)
    assert upgrade["arguments"]["rev"] == "head"  # an object, not a JSON string (issue 12.7)
    for row in (first, upgrade, stamp):
        assert row["environment"] == "development" and row["outcome"] == "ok"
        assert row["operator"] == "tester@example.com" and row["host"]
        started = datetime.fromisoformat(str(row["started_at"]))
        finished = datetime.fromisoformat(str(row["finished_at"]))
        assert started <= finished and row["duration_ms"] > 0
        assert row["git_commit"] and row["error"] is None


def test_limit_and_the_text_view(project, dev):
    for revision in (FIRST, HEAD):
        assert_ok(project.invoke("dev.upgrade", "--rev", revision))

    (latest,) = rows(project, "--limit", "1")
    text = project.invoke("dev.audit")

    assert latest["revision_after"] == HEAD
    assert_ok(text)
    header, *lines = text.stdout.splitlines()
    assert header.split()[:3] == ["STARTED", "(UTC)", "OUTCOME"]
    assert len(lines) == 2 and "dev.upgrade" in lines[0] and f"{FIRST} -> {HEAD}" in lines[0]
    assert "tester@example.com " in lines[0]  # operator and host are separate columns
    assert project.invoke("dev.audit", "--limit", "0").code == 2


def test_local_runs_are_not_audited(project):
    url = sqlite_url(project.tmp / "local.sqlite3")
    project.setenv("DATABASE_URL_LOCAL", url)
    assert_ok(project.invoke("local.upgrade"))

    assert AUDIT_TABLE not in sqlalchemy.inspect(sqlalchemy.create_engine(url)).get_table_names()


def test_the_audit_table_is_invisible_to_check_and_autogenerate(project, dev):
    scripts = repository_chain(project.tmp / "scripts").use(project).scripts
    assert_ok(project.invoke("dev.upgrade"))
    assert rows(project)  # the table exists now
    files = scripts.files()

    assert_ok(project.invoke("dev.check"))
    result = project.invoke("dev.revision", "--autogenerate", "--message", "nothing to do")

    assert_ok(result)
    assert "no revision written" in result.stdout
    assert scripts.files() == files


@pytest.mark.postgres
def test_simultaneous_first_writes_create_the_table_once(pg_url):
    """Runners finishing together on a fresh database all keep their row."""
    environment = environment_for(pg_url)
    writers = 8
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(number: int) -> None:
        record = RunRecord("development", "dev.upgrade", {"n": number}, operator="t@example.com")
        barrier.wait()
        try:
            record_run(
                environment,
                record,
                outcome="ok",
                error=None,
                duration_ms=1.0,
                root=ROOT,
                connect_timeout=5,
            )
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(number,)) for number in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    engine = sqlalchemy.create_engine(pg_url)
    with engine.connect() as connection:
        count = connection.execute(sqlalchemy.text(f"SELECT count(*) FROM {AUDIT_TABLE}"))
        assert count.scalar() == writers
    engine.dispose()


@pytest.fixture
def dev(dev_on_both: str) -> str:
    return dev_on_both


@pytest.mark.hostile
@pytest.mark.postgres
def test_audit_limit_out_of_range_is_bad_input(project, pg_url):
    prepare(project, pg_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)

    result = project.invoke("dev.audit", "--limit", "99999999999999999999999")

    assert_one_line_error(result, ExitCode.USAGE, "--limit")
