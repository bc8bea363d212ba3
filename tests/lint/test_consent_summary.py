"""A refusal with many findings stays one bounded line (issue 17): the first few
`revision:rule`, then counts per rule; every finding in the run log, counts and a capped list in
the audit row."""

from __future__ import annotations

import json

import sqlalchemy

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, assert_one_line_error, sqlite_url, version_rows
from tests.revision_chains import empty_chain


def test_hundreds_of_findings_are_summarised(project):
    url = sqlite_url(project.tmp / "prod.sqlite3")
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        "f00000000001",
        "tables",
        'op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))',
        record=False,
    )
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    assert_ok(project.invoke("dev.upgrade"))
    project.monkeypatch.delenv("DATABASE_URL_DEVELOPMENT")
    project.setenv("DATABASE_URL_PRODUCTION", url)
    for number in range(12):
        deletes = "\n".join(
            f'op.execute("DELETE FROM users WHERE id = {row}")' for row in range(20)
        )
        chain.add(f"f1000000{number:04d}", f"cleanup {number}", deletes, record=False)

    result = project.invoke("prod.upgrade", "--yes")

    line = assert_one_line_error(
        result,
        ExitCode.REFUSED,
        "240 destructive or blocking statements pending",
        "--allow-destructive",
    )
    assert len(line) < 600, line
    assert "and 7 more in 12 revisions: delete-rows 240" in line
    assert "every finding: `invoke prod.plan` and the run log" in line
    assert version_rows(schema_snapshot(url)) == ["f00000000001"]
    record = project.log_records()[-1]
    assert len(record["details"]["needs_consent"]) == 240
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        error, arguments = connection.execute(
            sqlalchemy.text("SELECT error, arguments FROM migration_audit ORDER BY id DESC")
        ).first()
    engine.dispose()
    assert len(error) < 700
    stored = json.loads(arguments)["needs_consent"]
    assert stored["count"] == 240 and stored["by_rule"] == {"delete-rows": 240}
    assert len(stored["findings"]) == 200 and stored["truncated"] == 40
