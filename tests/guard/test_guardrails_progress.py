"""Progress: a live, ticking status line on a terminal; quiet, line-oriented output in CI (no
carriage returns, no escape codes); each revision's duration in the run log."""

from __future__ import annotations

import pexpect
import pytest

from tests.helpers import assert_ok, sqlite_url, terminal
from tests.revision_chains import create_table, empty_chain

SLOW = "import time\ntime.sleep(2.5)"


@pytest.fixture
def chain(project):
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(project.tmp / "dev.sqlite3"))
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("a60000000001", "slow one", SLOW)
    chain.add("a60000000002", "quick one", create_table("quick"))
    return chain


def test_ci_output_is_one_plain_line_per_revision(project, chain):
    result = project.invoke_subprocess("dev.upgrade")

    assert_ok(result)
    assert "\r" not in result.stdout and "\x1b" not in result.stdout
    lines = [line.strip() for line in result.stdout.splitlines() if "] applied" in line]
    assert len(lines) == 3
    assert lines[0].startswith("[1/3] applied c0000000000c counter table (")
    assert lines[1].startswith("[2/3] applied a60000000001 slow one (")
    seconds = float(lines[1].rsplit("(", 1)[1].split()[0])
    assert seconds >= 2.5
    finished = [record for record in project.log_records() if "outcome" in record][-1]
    durations = {item["revision"]: item["seconds"] for item in finished["details"]["revisions"]}
    assert set(durations) == set(chain.ids) and durations["a60000000001"] >= 2.5


def test_a_terminal_shows_a_ticking_status_line(project, chain):
    child = terminal("dev.upgrade")
    child.expect(r"\[2/3\] applying a60000000001 slow one 0s")
    child.expect(r"\[2/3\] applying a60000000001 slow one [12]s")  # it ticks while it runs
    child.expect(r"\[2/3\] applied a60000000001 slow one \(")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 0
