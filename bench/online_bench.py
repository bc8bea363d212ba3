"""Online schema changes under load on PostgreSQL: `op.backfill` against one UPDATE, and an
expand/contract rename with a type change against Alembic's plain `alter_column`, in one run.

    .venv/bin/python bench/online_bench.py [--rows 2000000] [--writers 8] [--readers 2]

Builds a throwaway database with a table `people` of --rows rows, starts --writers processes
(single-row UPDATEs and INSERTs in autocommit, in a loop, each statement timed by the process
that sends it), --readers processes (single-row SELECTs) and a sampler process, and while they
run, this process (which otherwise only waits) makes each change:

(a) fills a new column `score` with `v * 2`: once as one UPDATE, once with `op.backfill`
    (tasks/online/backfill.py) run through Alembic's `op`;
(b) renames `code integer` to `ref bigint` (a type change that rewrites the table): once as
    Alembic's plain `alter_column(new_column_name=..., type_=...)`, once as the expand and
    contract revisions autogenerate writes from `info={"renamed_from": "code"}`. Writers play
    the old application (they write `code`) until the expand is in, then the new one (`ref`),
    as a deploy between the two halves would; under the plain form the old application's
    statements fail the moment the rename commits, and those failures are counted;
(c) runs `op.backfill` of `hits = hits + 1` in a child process, stops it with SIGTERM half way,
    runs it again, and counts rows whose `hits` is not exactly 1.

For each change: writer statement latency p50/p99/max end to end (as the writer process saw it:
network, server, its own scheduling) over the change, failed writer statements, the longest
server-side lock wait of a writer (pg_stat_activity, wait_event_type 'Lock', with what blocked
it), the longest transaction the change held, and the total time. The sampler looks every 10 ms,
so a wait or transaction is seen up to about 11 ms short and one shorter than that may be missed;
the long ones are what matters. The no-change baseline is measured in the same run, so the
machine's own noise is visible next to the changes. Goal: the online forms keep every writer
statement under 200 ms and no transaction of theirs over 1 s.
Prints a markdown table (README, Performance). The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
CHANGE_APP = "online-bench-change"
LOCK_TIMEOUT = "5s"


def base_metadata() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(
        "people",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("code", sa.Integer, nullable=False),
        sa.Column("v", sa.Integer, nullable=False, server_default="0"),
    )
    return metadata


def renamed_metadata() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(
        "people",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("v", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ref", sa.BigInteger, nullable=False, info={"renamed_from": "code"}),
    )
    return metadata


def build(engine: sa.Engine, rows: int) -> None:
    base_metadata().create_all(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO people (name, code) "
            f"SELECT 'person ' || g, g FROM generate_series(1, {rows}) g"
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE people")


# --- running revision code --------------------------------------------------------------------


def expand_contract_code(engine: sa.Engine) -> tuple[str, str]:
    """The upgrade code of the expand and the contract revision autogenerate writes."""
    from alembic.autogenerate import produce_migrations, render_python_code
    from alembic.migration import MigrationContext

    from tasks.migrate import safe_revisions

    metadata = renamed_metadata()
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "target_metadata": metadata,
                "compare_type": True,
                # the tasks' bookkeeping is not the application's (env.py leaves it out too)
                "include_name": lambda name, kind, _parents: (
                    not (kind == "table" and str(name).startswith("migration_"))
                ),
            },
        )
        script = produce_migrations(context, metadata)
        script.rev_id, script.message = "expand", "rename code to ref"
        directives = [script]
        safe_revisions.process_revision_directives(context, None, directives)
        expand, contract = directives
        rendered = (
            render_python_code(item.upgrade_ops, migration_context=context)
            for item in (expand, contract)
        )
        return tuple(textwrap.dedent("    " + code) for code in rendered)  # type: ignore[return-value]


def run_code(url: sa.URL, code: str) -> float:
    """Run revision code through Alembic's `op` on a session named CHANGE_APP; seconds taken."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    import tasks.migrate.safe_ops  # op.drop_invalid_index
    import tasks.online.backfill  # op.backfill
    import tasks.online.lock_retries  # noqa: F401  (op.lock_retries)

    engine = sa.create_engine(url, connect_args={"application_name": CHANGE_APP})
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            connection.commit()
            context = MigrationContext.configure(
                connection, opts={"transaction_per_migration": True}
            )
            started = time.perf_counter()
            with context.begin_transaction(_per_migration=True):
                exec(code, {"op": Operations(context), "sa": sa})  # noqa: S102
            connection.commit()
            return time.perf_counter() - started
    finally:
        engine.dispose()


# --- load: writers, readers and the sampler, each in a process of its own ----------------------
# Threads in this process would time their own GIL waits and this process's scheduling along
# with the database's: each writer and reader is a process that times its own statements with
# a monotonic clock (CLOCK_MONOTONIC: comparable across processes) and sends its samples back
# when told to stop. The change runs in this process, which otherwise only waits.

WRITER_APP = "online-bench-writer"
SAMPLE_EVERY = 0.01  # seconds between two looks at pg_stat_activity


def writer(dsn: str, rows: int, stop: Any, new_code: Any, results: Any) -> None:
    """Single-row UPDATEs and INSERTs in autocommit until `stop`; (start, seconds, failed)."""
    import psycopg2

    connection = psycopg2.connect(dsn, application_name=WRITER_APP)
    connection.autocommit = True
    cursor = connection.cursor()
    chance = random.Random()
    timings: list[tuple[float, float, bool]] = []
    while not stop.is_set():
        column = "ref" if new_code.is_set() else "code"
        started = time.perf_counter()
        failed = False
        try:
            if chance.random() < 0.5:
                cursor.execute(
                    "UPDATE people SET v = v + 1 WHERE id = %s", (chance.randint(1, rows),)
                )
            else:
                cursor.execute(
                    f"INSERT INTO people (name, {column}) VALUES ('w', %s)",
                    (chance.randint(1, 1000),),
                )
        except psycopg2.Error:
            failed = True
            time.sleep(0.01)
        timings.append((started, time.perf_counter() - started, failed))
    connection.close()
    results.put(("writer", timings))


def reader(dsn: str, rows: int, stop: Any, results: Any) -> None:
    """Single-row SELECTs until `stop`; (start, seconds)."""
    import psycopg2

    connection = psycopg2.connect(dsn, application_name="online-bench-reader")
    connection.autocommit = True
    cursor = connection.cursor()
    chance = random.Random()
    timings: list[tuple[float, float]] = []
    while not stop.is_set():
        started = time.perf_counter()
        cursor.execute("SELECT * FROM people WHERE id = %s", (chance.randint(1, rows),))
        cursor.fetchall()
        timings.append((started, time.perf_counter() - started))
    connection.close()
    results.put(("reader", timings))


# One look: the change's oldest open transaction, and the writer that has waited longest for a
# heavyweight lock (wait_event_type 'Lock': a row or table lock, not I/O or LWLocks) with what
# blocks it. A writer's statement is one autocommit statement, so clock_timestamp() -
# query_start is how long it has been waiting (plus the microseconds before it asked).
SAMPLE_SQL = """
SELECT
  (SELECT extract(epoch FROM clock_timestamp() - xact_start) || '|' || pid || ' '
          || xact_start || '|' || left(query, 80)
     FROM pg_stat_activity WHERE application_name = %(change)s AND xact_start IS NOT NULL
     ORDER BY xact_start LIMIT 1),
  (SELECT extract(epoch FROM clock_timestamp() - w.query_start) || '|' || coalesce((
            SELECT string_agg(b.application_name || ': ' || left(b.query, 60), '; ')
              FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(w.pid))), '')
     FROM pg_stat_activity w
    WHERE w.application_name = %(writer)s AND w.wait_event_type = 'Lock'
      AND w.state = 'active'
    ORDER BY w.query_start LIMIT 1)
"""


def sampler(dsn: str, stop: Any, results: Any) -> None:
    """pg_stat_activity every SAMPLE_EVERY seconds until `stop`: (time, change transaction age,
    its statement, longest writer lock wait, what blocked it); only looks that found either.

    Resolution: a look every 10 ms plus the query's own time (about 1 ms), so a wait or a
    transaction is seen up to about 11 ms short of its length, and one shorter than that may be
    missed entirely; the long ones, which the goal is about, are not."""
    import psycopg2

    connection = psycopg2.connect(dsn, application_name="online-bench-sampler")
    connection.autocommit = True
    cursor = connection.cursor()
    samples: list[tuple[float, float, str, float, str]] = []
    looks = 0
    while not stop.wait(SAMPLE_EVERY):
        cursor.execute(SAMPLE_SQL, {"change": CHANGE_APP, "writer": WRITER_APP})
        change, waiting = cursor.fetchone()
        looks += 1
        if change is None and waiting is None:
            continue
        age, transaction, statement = change.split("|", 2) if change else ("0", "", "")
        wait, blocker = waiting.split("|", 1) if waiting else ("0", "")
        samples.append(
            (
                time.perf_counter(),
                float(age),
                f"{transaction}|{' '.join(statement.split())}",
                float(wait),
                blocker,
            )
        )
    connection.close()
    results.put(("sampler", (looks, samples)))


@dataclass
class Load:
    """The load's processes, the events they watch, and their samples once stopped."""

    dsn: str
    rows: int
    writers: int
    readers: int
    processes: list[Any] = field(default_factory=list)
    writes: list[tuple[float, float, bool]] = field(default_factory=list)  # start, s, failed
    reads: list[tuple[float, float]] = field(default_factory=list)
    samples: list[tuple[float, float, str, float, str]] = field(default_factory=list)
    looks: int = 0

    def __post_init__(self) -> None:
        self._mp = multiprocessing.get_context("spawn")
        self.stop = self._mp.Event()
        self.new_code = self._mp.Event()
        self._results = self._mp.Queue()

    def start(self) -> None:
        for _ in range(self.writers):
            self._spawn(writer, self.dsn, self.rows, self.stop, self.new_code, self._results)
        for _ in range(self.readers):
            self._spawn(reader, self.dsn, self.rows, self.stop, self._results)
        self._spawn(sampler, self.dsn, self.stop, self._results)

    def _spawn(self, target: Any, *arguments: Any) -> None:
        process = self._mp.Process(target=target, args=arguments, daemon=True)
        process.start()
        self.processes.append(process)

    def finish(self) -> None:
        """Stop every process and collect what each measured (the queue is drained before the
        joins: a process does not end while its samples are still in the pipe)."""
        self.stop.set()
        for _ in self.processes:
            kind, data = self._results.get(timeout=120)
            if kind == "writer":
                self.writes.extend(data)
            elif kind == "reader":
                self.reads.extend(data)
            else:
                self.looks, self.samples = data
        for process in self.processes:
            process.join(timeout=30)

    def longest_change(self, start: float, end: float) -> tuple[float, str]:
        """The change's longest transaction in [start, end], with the statements it was seen
        running (a sample names only the statement of that moment: COMMIT, say)."""
        seen = [(age, what) for at, age, what, _, _ in self.samples if start <= at <= end and age]
        if not seen:
            return 0.0, ""
        age, what = max(seen)
        transaction = what.split("|", 1)[0]
        statements = [w.split("|", 1)[1] for _, w in seen if w.split("|", 1)[0] == transaction]
        return age, " / ".join(dict.fromkeys(statements))[:240]

    def worst_lock_wait(self, start: float, end: float) -> tuple[float, str]:
        """The longest lock wait seen of a writer statement that overlapped [start, end]: one
        that began (`at - wait`) before the end and was still waiting after the start."""
        seen = [
            (wait, blocker)
            for at, _, _, wait, blocker in self.samples
            if wait and at >= start and at - wait <= end
        ]
        return max(seen, default=(0.0, ""))


@dataclass
class Row:
    change: str
    form: str
    statements: int
    failed: int
    p50: float
    p99: float
    worst: float
    lock_wait: float  # ms: the longest server-side lock wait of a writer seen by the sampler
    longest: float
    seconds: float


SETTLE = 1.0  # seconds after a change: writers it blocked finish and are counted


def summarise(load: Load, change: str, form: str, start: float, end: float) -> Row:
    overlapping = [
        (seconds, failed)
        for began, seconds, failed in load.writes
        if began <= end and began + seconds >= start
    ]
    latencies = sorted(seconds for seconds, _ in overlapping) or [0.0]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    wait, blocker = load.worst_lock_wait(start, end)
    longest, statement = load.longest_change(start, end)
    if form:
        print(f"  {change} / {form}: longest transaction {longest:.2f} s ({statement})")
        print(f"    writer lock wait max {wait * 1000:.0f} ms behind: {blocker or '-'}")
    return Row(
        change,
        form,
        len(overlapping),
        sum(1 for _, failed in overlapping if failed),
        statistics.median(latencies) * 1000,
        p99 * 1000,
        latencies[-1] * 1000,
        wait * 1000,
        longest,
        end - start,
    )


# --- the changes ------------------------------------------------------------------------------


def timed(load: Load, change: str, form: str, action) -> tuple:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    action()
    end = time.perf_counter()
    print(f"  {change:<28} {form:<24} {end - start:7.1f} s", flush=True)
    time.sleep(SETTLE)
    return (change, form, start, end)


def run_sql(url: sa.URL, sql: str) -> None:
    engine = sa.create_engine(url, connect_args={"application_name": CHANGE_APP})
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(sql)
    finally:
        engine.dispose()


def backfill_phase(url: sa.URL, load: Load, arguments) -> list[tuple]:  # type: ignore[no-untyped-def]
    phases = []
    change = "backfill a new column"
    run_sql(url, "ALTER TABLE people ADD COLUMN score integer")
    phases.append(
        timed(load, change, "one UPDATE", lambda: run_sql(url, "UPDATE people SET score = v * 2"))
    )
    run_sql(url, "ALTER TABLE people DROP COLUMN score")
    run_sql(url, "ALTER TABLE people ADD COLUMN score integer")
    code = (
        f'op.backfill("people", {{"score": "v * 2"}}, batch_size={arguments.batch_size}, '
        f"pause={arguments.pause})"
    )
    phases.append(timed(load, change, "op.backfill", lambda: run_code(url, code)))
    return phases


def rename_phase(url: sa.URL, load: Load, arguments) -> list[tuple]:  # type: ignore[no-untyped-def]
    change = "rename + type change"
    phases = []
    run_sql(url, "ALTER TABLE people DROP COLUMN score")  # (a)'s: the expand is the rename only
    expand, contract = expand_contract_code(sa.create_engine(url))
    if arguments.show:
        print(f"--- expand:\n{expand}\n--- contract:\n{contract}")
    plain = (
        'op.alter_column("people", "code", new_column_name="ref", '
        "type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False)"
    )
    phases.append(timed(load, change, "plain alter_column", lambda: run_code(url, plain)))
    load.new_code.set()  # the plain rename broke the old code: what was deployed must follow
    time.sleep(1.0)
    # Back to `code integer` (unmeasured; another rewrite), the old application again.
    load.new_code.clear()
    run_sql(url, "ALTER TABLE people RENAME COLUMN ref TO code")
    run_sql(url, "ALTER TABLE people ALTER COLUMN code TYPE integer")
    time.sleep(1.0)
    phases.append(timed(load, change, "expand (op.backfill)", lambda: run_code(url, expand)))
    load.new_code.set()  # the new application is deployed between expand and contract
    time.sleep(1.0)
    phases.append(timed(load, change, "contract", lambda: run_code(url, contract)))
    return phases


def resume_check(url: sa.URL, arguments) -> str:  # type: ignore[no-untyped-def]
    """(c): a backfill stopped with SIGTERM half way, then run again: rows not counted once."""
    run_sql(url, "ALTER TABLE people ADD COLUMN hits integer NOT NULL DEFAULT 0")
    code = f'op.backfill("people", {{"hits": "hits + 1"}}, batch_size={arguments.batch_size})'
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", url.render_as_string(hide_password=False), code],
        stdout=subprocess.DEVNULL,
    )
    engine = sa.create_engine(url)
    total = 0
    with engine.connect() as connection:
        total = connection.exec_driver_sql("SELECT count(*) FROM people").scalar() or 0
        while child.poll() is None:
            connection.rollback()
            done = connection.execute(
                sa.text(
                    "SELECT coalesce(max(rows_done), 0) FROM migration_backfill "
                    "WHERE description LIKE :hits"
                ),
                {"hits": "%hits%"},
            ).scalar()
            if done and done >= total // 2:
                child.send_signal(signal.SIGTERM)
                break
            time.sleep(0.05)
    child.wait()
    with engine.connect() as connection:
        at_stop = connection.execute(
            sa.text("SELECT rows_done FROM migration_backfill WHERE description LIKE :hits"),
            {"hits": "%hits%"},
        ).scalar()
    started = time.perf_counter()
    run_code(url, code)
    rerun = time.perf_counter() - started
    with engine.connect() as connection:
        wrong = connection.exec_driver_sql("SELECT count(*) FROM people WHERE hits <> 1").scalar()
        counted = connection.exec_driver_sql("SELECT count(*) FROM people").scalar()
    engine.dispose()
    return (
        f"(c) stopped with SIGTERM (exit {child.returncode}) after {at_stop:,} of {total:,} rows; "
        f"the re-run finished in {rerun:.1f} s; rows whose counter is not exactly 1: {wrong} "
        f"of {counted:,}"
    )


# --- the run ----------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        run_code(sa.make_url(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--pause", type=float, default=0.01)
    parser.add_argument("--show", action="store_true", help="print the expand/contract code")
    arguments = parser.parse_args()
    arguments.load_before = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average (1, 5, 15 min) before: {arguments.load_before}", flush=True)

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"online_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.url.set(database=name)
    try:
        engine = sa.create_engine(url)
        started = time.perf_counter()
        build(engine, arguments.rows)
        engine.dispose()
        print(f"built people: {arguments.rows:,} rows in {time.perf_counter() - started:.1f} s")
        rows, resumed = measure(url, arguments)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    print_table(rows, arguments)
    print()
    print(resumed)


def measure(url: sa.URL, arguments) -> tuple[list[Row], str]:  # type: ignore[no-untyped-def]
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    load = Load(dsn, arguments.rows, arguments.writers, arguments.readers)
    load.start()
    try:
        time.sleep(3.0)  # the processes start and connect
        start = time.perf_counter()
        time.sleep(5.0)
        phases = [("no change (baseline)", "", start, time.perf_counter())]
        time.sleep(SETTLE)
        phases += backfill_phase(url, load, arguments)
        phases += rename_phase(url, load, arguments)
    finally:
        load.finish()
    print(
        f"sampler: {load.looks:,} looks at pg_stat_activity, one every {SAMPLE_EVERY * 1000:.0f} "
        f"ms; {len(load.writes):,} writer and {len(load.reads):,} reader statements"
    )
    rows = [summarise(load, *phase) for phase in phases]
    return rows, resume_check(url, arguments)


def print_table(rows: list[Row], arguments) -> None:  # type: ignore[no-untyped-def]
    print()
    print(
        f"{arguments.rows:,} rows, {arguments.writers} writer and {arguments.readers} reader "
        f"processes throughout; op.backfill batch_size {arguments.batch_size}, pause "
        f"{arguments.pause} s; load average before: {arguments.load_before}"
    )
    print()
    print(
        "| Change | Form | Total | Writer statements | Failed | p50 | p99 | max | "
        "Writer lock wait max | Longest transaction |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        total = f"{row.seconds:.1f} s" if row.form else ""
        longest = f"{row.longest:.2f} s" if row.form else ""
        print(
            f"| {row.change} | {row.form} | {total} | {row.statements:,} | {row.failed:,} | "
            f"{row.p50:.1f} ms | {row.p99:.1f} ms | {row.worst:.0f} ms | {row.lock_wait:.0f} ms | "
            f"{longest} |"
        )


if __name__ == "__main__":
    main()
