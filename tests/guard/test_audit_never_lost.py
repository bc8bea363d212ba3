"""An audit row is never lost silently (issue 16): when the database refuses the row of a run
that did its work, the run exits 9 with one line (no SQL, no parameters), the row waits in the
run log, and `<env>.audit --backlog` writes it later, once."""

from __future__ import annotations

import json

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tests.helpers import assert_ok, assert_one_line_error
from tests.revision_chains import counts, empty_chain

REFUSE_AUDIT = """
CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'the audit table takes no rows today'; END $$;
CREATE TRIGGER refuse_audit BEFORE INSERT ON migration_audit
FOR EACH ROW EXECUTE FUNCTION refuse_audit();
"""


def execute(url: str, sql: str) -> None:
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(sql)
    finally:
        engine.dispose()


def audit_rows(project) -> list[dict]:  # type: ignore[no-untyped-def]
    result = project.invoke("dev.audit", "--json", "--limit", "100")
    assert_ok(result)
    return json.loads(result.stdout)


@pytest.mark.postgres
def test_an_unwritable_audit_row_exits_9_and_is_replayed_once(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    assert_ok(project.invoke("dev.upgrade"))  # creates the audit table with its first row
    chain.add("a16000000001", "one more")
    execute(pg_url, REFUSE_AUDIT)

    result = project.invoke("dev.upgrade")

    line = assert_one_line_error(
        result, ExitCode.AUDIT_NOT_WRITTEN, "could not write the audit row", "audit --backlog"
    )
    assert int(ExitCode.AUDIT_NOT_WRITTEN) == 9
    assert "the audit table takes no rows today" in line
    assert "INSERT" not in line and "tester@example.com" not in line  # no SQL, no parameters
    assert counts(pg_url) == {"a16000000001": 1}  # the change itself was applied
    pending = [r for r in project.log_records() if r.get("event") == "audit row pending"]
    assert len(pending) == 1 and pending[0]["row"]["task"] == "dev.upgrade"

    execute(pg_url, "DROP TRIGGER refuse_audit ON migration_audit")
    replayed = project.invoke("dev.audit", "--backlog")
    assert_ok(replayed)
    assert "1 audit row written" in replayed.stdout
    again = project.invoke("dev.audit", "--backlog")
    assert_ok(again)
    assert "no audit rows waiting" in again.stdout

    upgrades = [row for row in audit_rows(project) if row["task"] == "dev.upgrade"]
    assert len(upgrades) == 2
    assert upgrades[0]["revision_after"] == "a16000000001"
    assert upgrades[0]["arguments"]["audit_replay_id"] == pending[0]["replay_id"]


@pytest.mark.postgres
def test_a_failed_run_keeps_its_own_code_when_its_audit_row_is_refused(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    assert_ok(project.invoke("dev.upgrade"))
    chain.add("a16000000002", "fails", 'op.execute("SELECT * FROM no_such_table")')
    execute(pg_url, REFUSE_AUDIT)

    result = project.invoke("dev.upgrade")

    assert_one_line_error(result, ExitCode.FAILED, "no_such_table")
    pending = [r for r in project.log_records() if r.get("event") == "audit row pending"]
    assert len(pending) == 1 and pending[0]["row"]["outcome"] == "failed"
