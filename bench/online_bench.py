"""Online schema changes under load on PostgreSQL: `op.backfill` against one UPDATE, and an
expand/contract rename with a type change against Alembic's plain `alter_column`, in one run.

    .venv/bin/python bench/online_bench.py [--rows 2000000] [--writers 8] [--readers 2]

Builds a throwaway database with a table `people` of --rows rows, starts --writers threads
(single-row UPDATEs and INSERTs in a loop, each statement timed) and --readers threads (single-row
SELECTs), and while they run:

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

For each change: writer statement latency p50/p99/max over the change, failed writer statements,
the longest transaction the change held (pg_stat_activity sampled every 20 ms, so a transaction
shorter than that may be missed; the long ones are what matters), and the total time. Goal:
the online forms keep every writer statement under 200 ms and no transaction of theirs over 1 s.
Prints a markdown table (README, Performance). The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

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
            connection, opts={"target_metadata": metadata, "compare_type": True}
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
    import tasks.online.backfill  # noqa: F401  (op.backfill)

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


# --- load -------------------------------------------------------------------------------------


@dataclass
class Load:
    """Writers and readers, and which application version the writers are."""

    dsn: str
    rows: int
    stop: threading.Event = field(default_factory=threading.Event)
    new_code: threading.Event = field(default_factory=threading.Event)
    timings: list[tuple[float, float, bool]] = field(default_factory=list)  # start, s, failed
    reads: list[tuple[float, float]] = field(default_factory=list)

    def write(self) -> None:
        import psycopg2

        connection = psycopg2.connect(self.dsn)
        connection.autocommit = True
        cursor = connection.cursor()
        chance = random.Random()
        while not self.stop.is_set():
            column = "ref" if self.new_code.is_set() else "code"
            started = time.perf_counter()
            failed = False
            try:
                if chance.random() < 0.5:
                    cursor.execute(
                        "UPDATE people SET v = v + 1 WHERE id = %s", (chance.randint(1, self.rows),)
                    )
                else:
                    cursor.execute(
                        f"INSERT INTO people (name, {column}) VALUES ('w', %s)",
                        (chance.randint(1, 1000),),
                    )
            except psycopg2.Error:
                failed = True
                time.sleep(0.01)
            self.timings.append((started, time.perf_counter() - started, failed))
        connection.close()

    def read(self) -> None:
        import psycopg2

        connection = psycopg2.connect(self.dsn)
        connection.autocommit = True
        cursor = connection.cursor()
        chance = random.Random()
        while not self.stop.is_set():
            started = time.perf_counter()
            cursor.execute("SELECT * FROM people WHERE id = %s", (chance.randint(1, self.rows),))
            cursor.fetchall()
            self.reads.append((started, time.perf_counter() - started))
        connection.close()


class LongestTransaction:
    """Samples pg_stat_activity for the change's sessions: the longest open transaction seen."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.longest = 0.0
        self.statement = ""  # what the longest transaction was running when last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LongestTransaction:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import psycopg2

        connection = psycopg2.connect(self.dsn)
        connection.autocommit = True
        cursor = connection.cursor()
        while not self._stop.wait(0.02):
            cursor.execute(
                "SELECT extract(epoch FROM clock_timestamp() - xact_start), query "
                "FROM pg_stat_activity WHERE application_name = %s AND xact_start IS NOT NULL "
                "ORDER BY xact_start LIMIT 1",
                (CHANGE_APP,),
            )
            row = cursor.fetchone()
            if row is not None and float(row[0]) > self.longest:
                self.longest, self.statement = float(row[0]), " ".join(row[1].split())[:80]
        connection.close()


@dataclass
class Row:
    change: str
    form: str
    statements: int
    failed: int
    p50: float
    p99: float
    worst: float
    longest: float
    seconds: float


def summarise(load: Load, change: str, form: str, start: float, end: float, longest: float) -> Row:
    overlapping = [
        (seconds, failed)
        for began, seconds, failed in list(load.timings)
        if began <= end and began + seconds >= start
    ]
    latencies = sorted(seconds for seconds, _ in overlapping) or [0.0]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Row(
        change,
        form,
        len(overlapping),
        sum(1 for _, failed in overlapping if failed),
        statistics.median(latencies) * 1000,
        p99 * 1000,
        latencies[-1] * 1000,
        longest,
        end - start,
    )


# --- the changes ------------------------------------------------------------------------------


def timed(load: Load, change: str, form: str, action) -> tuple:  # type: ignore[no-untyped-def]
    with LongestTransaction(load.dsn) as sampler:
        start = time.perf_counter()
        action()
        end = time.perf_counter()
    print(f"  {change:<28} {form:<24} {end - start:7.1f} s", flush=True)
    if sampler.statement:
        print(f"    longest transaction {sampler.longest:.2f} s: {sampler.statement}", flush=True)
    time.sleep(1.0)  # blocked writers finish and are counted
    return (change, form, start, end, sampler.longest)


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
    load = Load(dsn, arguments.rows)
    threads = [threading.Thread(target=load.write, daemon=True) for _ in range(arguments.writers)]
    threads += [threading.Thread(target=load.read, daemon=True) for _ in range(arguments.readers)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        start = time.perf_counter()
        time.sleep(5.0)
        phases = [("no change (baseline)", "", start, time.perf_counter(), 0.0)]
        phases += backfill_phase(url, load, arguments)
        phases += rename_phase(url, load, arguments)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    rows = [summarise(load, *phase) for phase in phases]
    return rows, resume_check(url, arguments)


def print_table(rows: list[Row], arguments) -> None:  # type: ignore[no-untyped-def]
    print()
    print(
        f"{arguments.rows:,} rows, {arguments.writers} writers and {arguments.readers} readers "
        f"throughout; op.backfill batch_size {arguments.batch_size}, pause {arguments.pause} s"
    )
    print()
    print(
        "| Change | Form | Total | Writer statements | Failed | p50 | p99 | max | "
        "Longest transaction |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        total = f"{row.seconds:.1f} s" if row.form else ""
        longest = f"{row.longest:.2f} s" if row.form else ""
        print(
            f"| {row.change} | {row.form} | {total} | {row.statements:,} | {row.failed:,} | "
            f"{row.p50:.1f} ms | {row.p99:.1f} ms | {row.worst:.0f} ms | {longest} |"
        )


if __name__ == "__main__":
    main()
