"""One migrator at a time, on real PostgreSQL: eight simultaneous runners, a runner killed with
SIGKILL in the middle of a slow revision, and a second runner that waits for the lock, names its
holder, then proceeds or gives up with ExitCode.LOCKED."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest
import sqlalchemy

from tasks.core.environments import Environment
from tasks.core.errors import ExitCode
from tasks.guard.lock import _AdvisoryLock, migration_lock
from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, assert_one_line_error, terminal, version_rows
from tests.revision_chains import counts, create_table, empty_chain, kill, spawn, wait_until

pytestmark = pytest.mark.postgres

RUNNERS = 8


def environment_for(url: str, name: str = "development") -> Environment:
    from sqlalchemy.engine import make_url

    return Environment(name, make_url(url), "DATABASE_URL_DEVELOPMENT", "test", protected=False)


def advisory_locks(pg_server, url: str) -> int:
    """Advisory locks granted in the test database (ours is the only kind the tasks take)."""
    database = sqlalchemy.engine.make_url(url).database
    with pg_server.connect() as connection:
        return connection.execute(
            sqlalchemy.text(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = :name "
                "AND l.classid = :high AND l.objid = :low"
            ),
            {
                "name": database,
                "high": _AdvisoryLock.KEY >> 32,
                "low": _AdvisoryLock.KEY & 0xFFFF_FFFF,
            },
        ).scalar()


def backends_running(pg_server, url: str, fragment: str) -> int:
    """Server sessions on the test database whose current query contains `fragment`."""
    database = sqlalchemy.engine.make_url(url).database
    with pg_server.connect() as connection:
        return connection.execute(
            sqlalchemy.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :name "
                "AND query LIKE :pattern AND pid <> pg_backend_pid()"
            ),
            {"name": database, "pattern": f"%{fragment}%"},
        ).scalar()


def audit_rows(project) -> list[dict]:  # type: ignore[no-untyped-def]
    result = project.invoke("dev.audit", "--json", "--limit", "100")
    assert_ok(result)
    return json.loads(result.stdout)


@pytest.fixture
def dev(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    return pg_url


def test_eight_simultaneous_upgrades_apply_each_revision_exactly_once(project, dev, pg_server):
    chain = empty_chain(project.tmp / "scripts").use(project)
    for number in range(1, 6):
        chain.add(
            f"e0000000000{number}",
            f"step {number}",
            f"""
            op.create_table("t{number}", sa.Column("id", sa.Integer, primary_key=True))
            op.execute("SELECT pg_sleep(0.1)")
            """,
        )

    runners = [spawn("dev.upgrade") for _ in range(RUNNERS)]
    results = [runner.communicate(timeout=240) for runner in runners]

    for runner, (stdout, stderr) in zip(runners, results, strict=True):
        assert runner.returncode == 0, stdout + stderr
        assert "Traceback" not in stdout + stderr
    assert counts(dev) == {revision: 1 for revision in chain.ids[1:]}
    assert version_rows(schema_snapshot(dev)) == [chain.head]
    # One runner applied everything; the others waited and found nothing to do.
    applied = [stdout for stdout, _ in results if "applied" in stdout]
    assert len(applied) == 1, applied
    assert sum("nothing to upgrade" in stdout for stdout, _ in results) == RUNNERS - 1
    # Only the run that changed something is audited (issue 18.8: no row for a no-op).
    rows = [row for row in audit_rows(project) if row["task"] == "dev.upgrade"]
    assert len(rows) == 1
    assert {row["outcome"] for row in rows} == {"ok"}
    assert {row["revision_after"] for row in rows} == {chain.head}
    assert not rows[0]["revision_before"]
    assert advisory_locks(pg_server, dev) == 0


def test_sigkill_in_the_middle_of_a_slow_revision(project, dev, pg_server):
    chain = empty_chain(project.tmp / "scripts").use(project)
    good = chain.add("f00000000001", "good", create_table("good"))
    slow = chain.add(
        "f00000000002",
        "slow",
        """
        op.create_table("slow_table", sa.Column("id", sa.Integer))
        op.execute(
            "SELECT pg_sleep(CASE WHEN to_regclass('public.go_fast') IS NULL THEN 60 ELSE 0 END)"
        )
        """,
    )
    last = chain.add("f00000000003", "after", create_table("after"))

    runner = spawn("dev.upgrade")
    try:
        wait_until(lambda: backends_running(pg_server, dev, "pg_sleep(CASE"), what="the slow one")
    finally:
        kill(runner)

    # Consistent at once: the last good revision, nothing of the killed one visible.
    snapshot = schema_snapshot(dev)
    assert version_rows(snapshot) == [good]
    assert "slow_table" not in snapshot and "after" not in snapshot
    assert counts(dev) == {good: 1}
    # The server notices the dead client within a few seconds: the lock is free and the killed
    # revision's session (with its uncommitted DDL and locks) is gone, not sleeping on.
    wait_until(lambda: advisory_locks(pg_server, dev) == 0, timeout=15, what="the lock")
    wait_until(
        lambda: backends_running(pg_server, dev, "pg_sleep(CASE") == 0,
        timeout=15,
        what="the killed runner's session to end",
    )

    with sqlalchemy.create_engine(dev).begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE go_fast (id int)"))
    assert_ok(project.invoke("dev.upgrade"))

    assert version_rows(schema_snapshot(dev)) == [last]
    assert counts(dev) == {good: 1, slow: 1, last: 1}


GATE = 424242  # an advisory lock the test holds to keep a revision running until it lets go
GATED = f"""
op.execute("SET LOCAL lock_timeout = 0")
op.execute("SELECT pg_advisory_xact_lock({GATE})")
"""


def test_a_waiting_runner_names_the_holder_then_finds_nothing_to_do(project, dev, pg_server):
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("a10000000001", "gated", GATED)
    gate_engine = sqlalchemy.create_engine(dev, poolclass=sqlalchemy.pool.NullPool)
    gate = gate_engine.connect()
    gate.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({GATE})"))

    first = spawn("dev.upgrade")
    second = None
    try:
        wait_until(lambda: advisory_locks(pg_server, dev) == 1, what="the first runner's lock")
        second = spawn("dev.upgrade")
        told = Lines(second)
        wait_until(lambda: told.contains("migration lock held by"), what="the second to wait")
    finally:
        gate.close()  # the session ends, the gate opens: the first runner's revision proceeds
        gate_engine.dispose()
        first_out, first_err = first.communicate(timeout=120)
        if second is not None:
            second.wait(timeout=120)

    assert first.returncode == 0, first_out + first_err
    assert second.returncode == 0, told.text()
    waited = told.text()
    assert "tester@example.com" in waited and "dev.upgrade" in waited
    assert f"pid {first.pid}" in waited  # the runner to look for
    assert "migration lock acquired after" in waited
    assert "nothing to upgrade" in waited
    assert counts(dev) == {chain.head: 1}


class Lines:
    """A subprocess's stdout, collected line by line in the background."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    def contains(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def text(self) -> str:
        self._thread.join(30)
        return "".join(self.lines)


def test_lock_timeout_gives_up_with_the_locked_code_and_changes_nothing(project, dev):
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("a20000000001", "one", create_table("one"))
    before = schema_snapshot(dev)
    holder = "ops@example.com@deploy-7 prod.upgrade"

    with migration_lock(environment_for(dev), label=holder, timeout=0):
        result = project.invoke("dev.upgrade", "--lock-timeout", "1")

    line = assert_one_line_error(result, ExitCode.LOCKED, "migration lock", holder)
    assert "1 s" in line
    assert schema_snapshot(dev) == before
    rows = audit_rows(project)
    assert [(row["task"], row["outcome"]) for row in rows] == [("dev.upgrade", "refused")]
    assert holder in rows[0]["error"]


def test_lock_timeout_zero_does_not_wait(project, dev):
    empty_chain(project.tmp / "scripts").use(project)
    with migration_lock(environment_for(dev), label="someone", timeout=0):
        result = project.invoke("dev.stamp", "--rev", "head", "--yes", "--lock-timeout", "0")

    assert_one_line_error(result, ExitCode.LOCKED, "someone")


def test_the_lock_is_released_after_a_run_and_after_a_failure(project, dev, pg_server):
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("a30000000001", "fails", 'op.execute("SELECT 1/0")')

    assert project.invoke("dev.upgrade").code == ExitCode.FAILED
    assert advisory_locks(pg_server, dev) == 0
    # A second run is not told the lock is held.
    again = project.invoke("dev.upgrade", "--lock-timeout", "0")
    assert again.code == ExitCode.FAILED and "migration lock" not in again.stderr


def test_on_a_terminal_the_wait_ticks_and_ends_when_the_holder_leaves(project, dev):

    import pexpect

    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("a40000000001", "one", create_table("one"))

    with migration_lock(environment_for(dev), label="holder@example.com deploy", timeout=0):
        child = terminal("dev.upgrade")
        child.expect("migration lock held by 'holder@example.com deploy'")
        child.expect(r"waiting for the migration lock: [12]/60 s")
    child.expect(r"migration lock acquired after \d+\.\d s")
    child.expect("now at a40000000001")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 0
    assert counts(dev) == {"a40000000001": 1}
