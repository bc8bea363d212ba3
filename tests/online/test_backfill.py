"""`op.backfill` on real PostgreSQL, MariaDB and SQLite: every row updated exactly once, also
when the run is stopped half way (SIGTERM, SIGKILL) and run again.

The backfill's expression increments a counter (`n = n + 1`), so a batch that ran twice shows
as a 2 and a skipped one as a 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy

from tests.conftest import ROOT, Project
from tests.helpers import HEAD, assert_ok, copy_scripts

CREATE = "c0c0c0c0c0c1"
BACKFILL = "c0c0c0c0c0c2"
ROWS = 3000


def write_revisions(versions: Path, call: str = "") -> None:
    (versions / f"{CREATE}_counters.py").write_text(
        f'"""counters"""\n'
        f"revision = {CREATE!r}\n"
        f"down_revision = {HEAD!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n\n"
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n\n"
        "def upgrade() -> None:\n"
        '    op.create_table("counters", sa.Column("id", sa.Integer, primary_key=True),\n'
        '                    sa.Column("n", sa.Integer, nullable=False, server_default="0"))\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_table("counters")\n'
    )
    call = call or (
        'op.backfill("counters", {"n": "n + 1"}, '
        'batch_size=int(os.environ.get("BACKFILL_BATCH", "100")), '
        'pause=float(os.environ.get("BACKFILL_PAUSE", "0")), '
        # Fixed batches unless a test asks for time-sized ones: batch counts are asserted.
        'batch_seconds=float(os.environ.get("BACKFILL_SECONDS", "0")) or None)'
    )
    (versions / f"{BACKFILL}_backfill.py").write_text(
        f'"""count every row once"""\n'
        "import os\n\n"
        "from alembic import op\n\n"
        f"revision = {BACKFILL!r}\n"
        f"down_revision = {CREATE!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n\n\n"
        "def upgrade() -> None:\n"
        f"    {call}\n\n\n"
        "def downgrade() -> None:\n"
        "    pass\n"
    )


@pytest.fixture
def counters(project: Project, any_url: str, tmp_path: Path) -> str:
    """The dev environment on a fresh database at CREATE, with ROWS counters at 0 (ids with
    gaps: every third id)."""
    scripts = copy_scripts(tmp_path / "scripts")
    write_revisions(scripts.versions)
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(scripts.ini))
    project.setenv("DATABASE_URL_DEVELOPMENT", any_url)
    assert_ok(project.invoke("dev.upgrade", "--rev", CREATE))
    engine = sqlalchemy.create_engine(any_url)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("INSERT INTO counters (id) VALUES (:id)"),
            [{"id": 3 * index + 1} for index in range(ROWS)],
        )
    engine.dispose()
    return any_url


def query(url: str, sql: str) -> list[tuple]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sqlalchemy.text(sql))]
    finally:
        engine.dispose()


def counts(url: str) -> dict[int, int]:
    return dict(query(url, "SELECT n, count(*) FROM counters GROUP BY n"))  # type: ignore[arg-type]


def bookkeeping(url: str) -> list[tuple]:
    return query(url, "SELECT state, rows_done, batches, revision FROM migration_backfill")


def test_backfill_updates_every_row_once_and_is_audited(project: Project, counters: str) -> None:
    result = project.invoke("dev.upgrade")
    assert_ok(result)
    assert counts(counters) == {1: ROWS}
    assert f"backfill counters.n: done, {ROWS:,} rows in 30 batches" in result.stdout
    assert bookkeeping(counters) == [("applied", ROWS, 30, BACKFILL)]
    (arguments,) = query(
        counters, "SELECT arguments FROM migration_audit WHERE revision_after = 'c0c0c0c0c0c2'"
    )[0]
    (audited,) = json.loads(arguments)["backfills"]
    assert (audited["table"], audited["rows"], audited["resumed"]) == ("counters.n", ROWS, False)


def test_batches_slower_than_batch_seconds_shrink_and_every_row_is_still_updated_once(
    project: Project, counters: str
) -> None:
    """A target of a microsecond: every batch is slower than that (no timing is asserted), so
    after the first 100-row batch each one is the sizer's floor of 10 rows."""
    project.setenv("BACKFILL_SECONDS", "0.000001")
    result = project.invoke("dev.upgrade")
    assert_ok(result)
    assert counts(counters) == {1: ROWS}
    batches = 1 + (ROWS - 100) // 10
    assert bookkeeping(counters) == [("applied", ROWS, batches, BACKFILL)]
    assert f"done, {ROWS:,} rows in {batches:,} batches" in result.stdout


def test_a_downgraded_backfill_runs_again_when_reapplied(project: Project, counters: str) -> None:
    assert_ok(project.invoke("dev.upgrade"))
    assert_ok(project.invoke("dev.downgrade", "--rev", CREATE, "--yes", "--no-backup"))
    assert_ok(project.invoke("dev.upgrade"))
    assert counts(counters) == {2: ROWS}
    assert [row[0] for row in bookkeeping(counters)] == ["applied", "applied"]


def start_upgrade(project: Project, command: str) -> subprocess.Popen:
    """The upgrade in its own process, slow enough (20-row batches, 20 ms apart) to stop."""
    env = {**os.environ, "BACKFILL_BATCH": "20", "BACKFILL_PAUSE": "0.02"}
    if command == "invoke":
        argv = [sys.executable, "-m", "invoke", "dev.upgrade"]
    else:
        ini = os.environ["INVOKE_MIGRATIONS_ALEMBIC_INI"]
        argv = [str(ROOT / ".venv" / "bin" / "alembic"), "-c", ini, "upgrade", "head"]
        env["ENVIRONMENT"] = "development"
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_batches(url: str, process: subprocess.Popen, at_least: int) -> None:
    """Until the bookkeeping shows `at_least` committed batches (a deadline, not a timing
    assertion: the test only needs the stop to land in the middle)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            rows = query(url, "SELECT batches FROM migration_backfill")
        except sqlalchemy.exc.DBAPIError:
            rows = []  # not created yet, or SQLite busy for a moment
        if rows and rows[0][0] >= at_least:
            return
        time.sleep(0.05)
    pytest.fail("the backfill never got going")


@pytest.mark.parametrize(
    ("command", "signum", "code"),
    [
        ("invoke", signal.SIGTERM, 143),
        ("invoke", signal.SIGKILL, -signal.SIGKILL),
        ("alembic", signal.SIGTERM, -signal.SIGTERM),
    ],
    ids=["invoke-sigterm", "invoke-sigkill", "alembic-sigterm"],
)
def test_stopped_half_way_then_rerun_updates_every_row_exactly_once(
    project: Project, counters: str, command: str, signum: int, code: int
) -> None:
    process = start_upgrade(project, command)
    wait_for_batches(counters, process, 5)
    process.send_signal(signum)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    ((state, done, _batches, _revision),) = bookkeeping(counters)
    assert state == "running" and 0 < done < ROWS
    # What the stop left: exactly the committed batches are counted, nothing twice.
    assert counts(counters) == {1: done, 0: ROWS - done}
    assert query(counters, "SELECT version_num FROM alembic_version") == [(CREATE,)]

    result = project.invoke("dev.upgrade")
    assert_ok(result)
    assert counts(counters) == {1: ROWS}
    assert f"(resumed after {done:,} rows)" in result.stdout
    ((state, total, _batches, revision),) = bookkeeping(counters)
    assert (state, total, revision) == ("applied", ROWS, BACKFILL)


def test_sql_renders_a_commented_description(project: Project, counters: str) -> None:
    result = project.invoke("dev.upgrade", "--sql", "--rev", f"{CREATE}:{BACKFILL}")
    assert_ok(result)
    lines = [line for line in result.stdout.splitlines() if "backfill" in line.lower()]
    assert lines and all(line.startswith("--") for line in lines), result.stdout
    assert "UPDATE counters SET n = n + 1" in result.stdout
    assert counts(counters) == {0: ROWS}


def test_the_plan_finds_nothing_to_consent_to(project: Project, counters: str) -> None:
    result = project.invoke("dev.plan", "--json")
    assert_ok(result)
    planned = json.loads(result.stdout)
    (revision,) = planned["revisions"]
    assert revision["revision"] == BACKFILL and "op.backfill" in revision["sql"]
    assert planned["needs_consent"] == 0 and revision["findings"] == []


@pytest.mark.parametrize(
    ("call", "code", "needle"),
    [
        ('op.backfill("counters", {"missing": "1"})', 2, "counters has no column missing"),
        ('op.backfill("nowhere", {"n": "1"})', 2, "no table 'nowhere'"),
        ('op.backfill("counters", {"n": "n +"})', 1, "c0c0c0c0c0c2 failed: backfill counters.n"),
        ('op.backfill("counters", {"n": "1"}, batch_size=0)', 2, "batch_size must be positive"),
        ('op.backfill("counters", {"n": "1"}, batch_seconds=0)', 2, "batch_seconds must be"),
    ],
    ids=["column", "table", "expression", "batch-size", "batch-seconds"],
)
def test_bad_input_is_one_line_and_changes_nothing(
    project: Project, any_url: str, tmp_path: Path, call: str, code: int, needle: str
) -> None:
    scripts = copy_scripts(tmp_path / "scripts")
    write_revisions(scripts.versions, call)
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(scripts.ini))
    project.setenv("DATABASE_URL_DEVELOPMENT", any_url)
    assert_ok(project.invoke("dev.upgrade", "--rev", CREATE))
    result = project.invoke("dev.upgrade")
    assert result.code == code, result.output
    (line,) = result.stderr.strip().splitlines()
    assert needle in line and "Traceback" not in result.output
    assert query(any_url, "SELECT version_num FROM alembic_version") == [(CREATE,)]
    tables = sqlalchemy.inspect(sqlalchemy.create_engine(any_url)).get_table_names()
    if "migration_backfill" in tables:
        assert bookkeeping(any_url) == []


def test_the_version_hook_lives_where_alembic_keeps_it() -> None:
    """tasks.core.alembic_internals.call_when_version_recorded appends to this attribute."""
    import inspect

    from alembic.runtime.migration import MigrationContext

    source = inspect.getsource(MigrationContext)
    assert "self.on_version_apply_callbacks = opts.get" in source
    assert "for callback in self.on_version_apply_callbacks" in source


@pytest.mark.parametrize("any_url", ["sqlite"], indirect=True)
def test_a_terminal_shows_rows_rate_and_eta_on_the_live_line(
    project: Project, counters: str
) -> None:
    import pexpect

    from tests.helpers import terminal

    project.setenv("BACKFILL_BATCH", "50")
    project.setenv("BACKFILL_PAUSE", "0.01")
    child = terminal("dev.upgrade")
    child.expect(r"applying c0c0c0c0c0c2 count every row once \d+s \| backfill counters\.n: ")
    child.expect(r"[\d,]+ rows, [\d,]+ rows/s, ETA [\d.]+ s")
    child.expect(r"backfill counters\.n: done, 3,000 rows in 60 batches")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert counts(counters) == {1: ROWS}
