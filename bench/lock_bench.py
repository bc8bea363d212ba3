"""What a revision does to the writers of a live PostgreSQL table: plain Alembic against the
lock-safe forms autogenerate writes (tasks/migrate/safe_revisions.py), measured in the same run.

    .venv/bin/python bench/lock_bench.py [--rows 1000000] [--writers 8]

Builds a throwaway database with a table of --rows rows (and a small one it can reference),
starts --writers threads that each run single-row UPDATEs and INSERTs on it in a loop, timing
every statement, and then, while they run, applies one revision at a time: add an index, add a
foreign key, set NOT NULL, add a unique constraint, each once as plain Alembic writes it and
once as the safe autogenerate writes it. Each revision is produced the way `dev.revision
--autogenerate` produces it (Alembic's comparison of a model edit against the live database,
then the same rewriter, rendered to Python) and run through Alembic's `op` on a session with
the project's `lock_timeout` of 5s. Its downgrade restores the table, unmeasured, before the next.

For each, the writers' statements that overlapped the revision are summarised: p50, p99 and
max latency, and time blocked (the total of latencies above --blocked-ms). A baseline window with
no migration comes first. Target: with the safe form no writer statement waits longer than
200 ms and p99 stays within 3x the baseline. Prints a markdown table (README, Performance).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
OWNERS = 1000
LOCK_TIMEOUT = "5s"  # the project's default postgres_lock_timeout


# --- the schema and its four model edits ------------------------------------------------------


def base_metadata() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(
        "owners",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
    )
    sa.Table(
        "items",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("owner_id", sa.Integer, nullable=False),
        sa.Column("code", sa.BigInteger, sa.Identity(start=1), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("v", sa.Integer, nullable=False, server_default="0"),
    )
    return metadata


def with_index() -> sa.MetaData:
    metadata = base_metadata()
    sa.Index("ix_items_owner_id", metadata.tables["items"].c.owner_id)
    return metadata


def with_foreign_key() -> sa.MetaData:
    metadata = base_metadata()
    items = metadata.tables["items"]
    items.append_constraint(
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], name="fk_items_owner_id_owners")
    )
    return metadata


def with_not_null() -> sa.MetaData:
    metadata = base_metadata()
    metadata.tables["items"].c.note.nullable = False
    return metadata


def with_unique() -> sa.MetaData:
    metadata = base_metadata()
    items = metadata.tables["items"]
    items.append_constraint(sa.UniqueConstraint(items.c.code, name="uq_items_code"))
    return metadata


CHANGES: list[tuple[str, Callable[[], sa.MetaData]]] = [
    ("add an index", with_index),
    ("add a foreign key", with_foreign_key),
    ("set NOT NULL", with_not_null),
    ("add a unique constraint", with_unique),
]


def build(engine: sa.Engine, rows: int) -> None:
    base_metadata().create_all(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO owners (id, name) "
            f"SELECT g, 'owner ' || g FROM generate_series(1, {OWNERS}) g"
        )
        connection.exec_driver_sql(
            "INSERT INTO items (owner_id, note) "
            f"SELECT 1 + mod(g, {OWNERS}), md5(g::text) FROM generate_series(1, {rows}) g"
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE items")
        connection.exec_driver_sql("VACUUM ANALYZE owners")


# --- revisions, as autogenerate writes them -------------------------------------------------


def revision_code(engine: sa.Engine, metadata: sa.MetaData, safe: bool) -> tuple[str, str]:
    """(upgrade, downgrade) Python of the revision autogenerate writes for `metadata`."""
    from alembic.autogenerate import produce_migrations, render_python_code
    from alembic.migration import MigrationContext

    from tasks.migrate import safe_revisions

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"target_metadata": metadata, "compare_type": True}
        )
        script = produce_migrations(context, metadata)
        if safe:
            safe_revisions.process_revision_directives(context, None, [script])
        return tuple(  # type: ignore[return-value]
            textwrap.dedent("    " + render_python_code(ops, migration_context=context))
            for ops in (script.upgrade_ops, script.downgrade_ops)
        )


def run_code(engine: sa.Engine, code: str) -> float:
    """Run rendered revision code through Alembic's `op`, as a migration runs; seconds taken."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    import tasks.migrate.safe_ops  # noqa: F401  (op.drop_invalid_index)

    with engine.connect() as connection:
        connection.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        connection.commit()
        context = MigrationContext.configure(connection)
        started = time.perf_counter()
        with context.begin_transaction(_per_migration=True):
            exec(code, {"op": Operations(context), "sa": sa})  # noqa: S102
        connection.commit()
        return time.perf_counter() - started


# --- writers ----------------------------------------------------------------------------------


@dataclass
class Writer:
    url: str
    rows: int
    stop: threading.Event
    timings: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    error: BaseException | None = None

    def run(self) -> None:
        import psycopg2

        try:
            connection = psycopg2.connect(self.url)
            connection.autocommit = True
            cursor = connection.cursor()
            chance = random.Random()
            while not self.stop.is_set():
                started = time.perf_counter()
                if chance.random() < 0.5:
                    cursor.execute(
                        "UPDATE items SET v = v + 1 WHERE id = %s", (chance.randint(1, self.rows),)
                    )
                else:
                    cursor.execute(
                        "INSERT INTO items (owner_id, note) VALUES (%s, 'w')",
                        (chance.randint(1, OWNERS),),
                    )
                self.timings.append((started, time.perf_counter() - started))
            connection.close()
        except BaseException as error:  # reported by the main thread
            self.error = error


@dataclass
class Stats:
    statements: int
    p50: float
    p99: float
    worst: float
    blocked: float
    seconds: float


def window(
    writers: list[Writer], start: float, end: float, blocked_ms: float, took: float
) -> Stats:
    """Statements that overlapped [start, end]: latency percentiles in ms, blocked seconds."""
    latencies = sorted(
        seconds
        for writer in writers
        for began, seconds in list(writer.timings)
        if began <= end and began + seconds >= start
    )
    if not latencies:
        return Stats(0, 0, 0, 0, 0, took)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    blocked = sum(seconds for seconds in latencies if seconds * 1000 > blocked_ms)
    return Stats(
        len(latencies),
        statistics.median(latencies) * 1000,
        p99 * 1000,
        latencies[-1] * 1000,
        blocked,
        took,
    )


# --- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument("--blocked-ms", type=float, default=100.0)
    parser.add_argument("--show", action="store_true", help="print each revision's upgrade")
    arguments = parser.parse_args()

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"lock_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.url.set(database=name)
    engine = sa.create_engine(url)
    try:
        started = time.perf_counter()
        build(engine, arguments.rows)
        print(f"built items: {arguments.rows:,} rows in {time.perf_counter() - started:.1f} s")
        codes = {
            (label, safe): revision_code(engine, make(), safe)
            for label, make in CHANGES
            for safe in (False, True)
        }
        if arguments.show:
            for (label, safe), (upgrade, _) in codes.items():
                print(f"--- {label}, {'safe' if safe else 'plain'}:\n{upgrade}")
        results = measure(engine, url, arguments, codes)
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    print_table(results, arguments)


def measure(engine, url, arguments, codes) -> list[tuple[str, str, Stats]]:
    stop = threading.Event()
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    writers = [Writer(dsn, arguments.rows, stop) for _ in range(arguments.writers)]
    threads = [threading.Thread(target=writer.run, daemon=True) for writer in writers]
    for thread in threads:
        thread.start()
    # (change, form, start, end, seconds the revision took): summarised once every writer has
    # stopped, so a statement blocked until the revision ended is counted with its full wait.
    phases: list[tuple[str, str, float, float, float]] = []
    try:
        time.sleep(1.0)  # warm up
        start = time.perf_counter()
        time.sleep(arguments.baseline_seconds)
        phases.append(("no migration (baseline)", "", start, time.perf_counter(), 0.0))
        for label, _ in CHANGES:
            for safe in (False, True):
                upgrade, downgrade = codes[(label, safe)]
                form = "safe autogenerate" if safe else "plain Alembic"
                start = time.perf_counter()
                took = run_code(engine, upgrade)
                phases.append((label, form, start, time.perf_counter(), took))
                print(f"  {label:<24} {form:<18} {took:6.2f} s", flush=True)
                time.sleep(1.0)  # let blocked writers finish before the downgrade
                run_code(engine, downgrade)
                time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    for writer in writers:
        if writer.error is not None:
            raise RuntimeError(f"a writer failed: {writer.error}")
    return [
        (label, form, window(writers, start, end, arguments.blocked_ms, took))
        for label, form, start, end, took in phases
    ]


def print_table(results: list[tuple[str, str, Stats]], arguments) -> None:
    baseline = results[0][2]
    print()
    print(
        f"{arguments.writers} writers, {arguments.rows:,} rows; blocked = total of writer "
        f"statements slower than {arguments.blocked_ms:.0f} ms"
    )
    print()
    print(
        "| Change | Form | Revision | Writer statements | p50 | p99 | max | Blocked | "
        "p99 / baseline |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, form, stats in results:
        ratio = stats.p99 / baseline.p99 if baseline.p99 else 0
        took = f"{stats.seconds:.2f} s" if form else ""
        print(
            f"| {label} | {form} | {took} | {stats.statements:,} | {stats.p50:.1f} ms | "
            f"{stats.p99:.1f} ms | {stats.worst:.0f} ms | {stats.blocked:.2f} s | {ratio:.1f} |"
        )


if __name__ == "__main__":
    main()
