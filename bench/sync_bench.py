"""Benchmark `local.sync --check` against Alembic's `compare_metadata` on a large schema.

    .venv/bin/python bench/sync_bench.py [--tables 500] [--rounds 7] [--admin-url URL] [--keep]

Creates a throwaway PostgreSQL database (dropped at the end unless --keep): N tables of 12
columns, two indexes and a foreign key each, every tenth table missing a column. Then, in the
same run and on the same database, alternating so that noise hits all of them alike:

- bulk reflection alone: Inspector.get_multi_columns / _indexes / _foreign_keys /
  _unique_constraints / _pk_constraint for the model tables (the anchor);
- MetaData.reflect() of the same tables (bulk too, but it builds Table objects);
- Alembic's `compare_metadata` with type and server-default comparison on (what `alembic
  check` and `local.check` run);
- the check behind `local.sync --check` (`tasks.schema.sync.make_plan`: compare and classify);
each on a fresh connection, models already imported. Ratios are of medians from this run.

Also: the same check end to end (`invoke local.sync --check` in a subprocess, start-up
included, next to `invoke local.check`), the time `local.sync` takes to add the missing
columns, and peak memory (tracemalloc, in separate untimed passes; max RSS of the CLI runs).

`bench.sync_bench:metadata` is the model set (BENCH_TABLES tables), so the CLI runs use it
through INVOKE_MIGRATIONS_METADATA.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

DEFAULT_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
MISSING_EVERY = 10  # every tenth table lacks the `extra` column in the database


def bench_metadata(tables: int) -> sa.MetaData:
    """N tables of 12 columns, two indexes and a foreign key (to the previous table) each."""
    metadata = sa.MetaData(naming_convention=NAMING)
    for number in range(tables):
        parent = f"bench_{max(number - 1, 0):04d}"
        sa.Table(
            f"bench_{number:04d}",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("parent_id", sa.Integer, sa.ForeignKey(f"{parent}.id"), index=True),
            sa.Column("name", sa.String(120), nullable=False, index=True),
            sa.Column("code", sa.String(40)),
            sa.Column("amount", sa.Numeric(12, 2)),
            sa.Column("quantity", sa.Integer, nullable=False, server_default=sa.text("0")),
            sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
            sa.Column("notes", sa.Text),
            sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
            sa.Column("updated_at", sa.DateTime(timezone=True)),
            sa.Column("score", sa.Float),
            sa.Column("extra", sa.String(50)),
        )
    return metadata


def metadata() -> sa.MetaData:
    """The models the CLI runs compare against (INVOKE_MIGRATIONS_METADATA)."""
    return bench_metadata(int(os.environ.get("BENCH_TABLES", "500")))


# --- the throwaway database ---------------------------------------------------------------------


@contextmanager
def throwaway_database(admin_url: str, keep: bool) -> Iterator[str]:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"sync_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def build_schema(url: str, models: sa.MetaData) -> None:
    """Create the tables (100 per transaction: one transaction would run out of locks), add
    a few rows, then drop `extra` from every tenth table."""
    engine = sa.create_engine(url)
    tables = models.sorted_tables
    with engine.connect() as connection:
        for start in range(0, len(tables), 100):
            with connection.begin():
                models.create_all(connection, tables=tables[start : start + 100])
        with connection.begin():
            for table in tables:
                connection.execute(
                    table.insert(), [{"id": n, "name": f"row {n}"} for n in range(1, 6)]
                )
        drop_missing_columns(connection, models)
    engine.dispose()


def drop_missing_columns(connection: sa.Connection, models: sa.MetaData) -> None:
    with connection.begin():
        for number, table in enumerate(models.sorted_tables):
            if number % MISSING_EVERY == 0:
                connection.execute(sa.text(f"ALTER TABLE {table.name} DROP COLUMN IF EXISTS extra"))


# --- what is measured ---------------------------------------------------------------------------


def bulk_reflection(connection: sa.Connection, models: sa.MetaData) -> int:
    names = [table.name for table in models.sorted_tables]
    inspector = sa.inspect(connection)
    columns = inspector.get_multi_columns(filter_names=names)
    inspector.get_multi_indexes(filter_names=names)
    inspector.get_multi_foreign_keys(filter_names=names)
    inspector.get_multi_unique_constraints(filter_names=names)
    inspector.get_multi_pk_constraint(filter_names=names)
    return len(columns)


def metadata_reflect(connection: sa.Connection, models: sa.MetaData) -> int:
    """MetaData.reflect(): also multi-table reflection, but it builds Table objects."""
    reflected = sa.MetaData()
    reflected.reflect(connection, only=[table.name for table in models.sorted_tables])
    return len(reflected.tables)


def alembic_compare(connection: sa.Connection, models: sa.MetaData) -> int:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tasks.core.alembic_config import comparison_options

    context = MigrationContext.configure(connection, opts=comparison_options())
    return len(compare_metadata(context, models))


def sync_check(connection: sa.Connection, models: sa.MetaData) -> int:
    from tasks.schema.sync import make_plan

    return len(make_plan(connection, models).items)


def measure(
    url: str, models: sa.MetaData, functions: dict[str, Callable[..., int]], rounds: int
) -> dict[str, list[float]]:
    """Seconds per call, fresh connection each time, round robin in a rotating order."""
    engine = sa.create_engine(url)
    times: dict[str, list[float]] = {name: [] for name in functions}
    names = list(functions)
    for round_number in range(rounds + 1):  # round 0 warms caches and imports, not counted
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in order:
            with engine.connect() as connection:
                started = time.perf_counter()
                functions[name](connection, models)
                elapsed = time.perf_counter() - started
                connection.rollback()
            if round_number:
                times[name].append(elapsed)
    engine.dispose()
    return times


def peak_memory(url: str, models: sa.MetaData, function: Callable[..., int]) -> float:
    """Peak Python allocation (MiB) during one call, traced separately from the timings."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        tracemalloc.start()
        function(connection, models)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        connection.rollback()
    engine.dispose()
    return peak / 2**20


def cli(url: str, tables: int, *task: str) -> tuple[float, int, float]:
    """Wall time, exit code and max RSS (MiB) of `invoke TASK...` run the way a user does."""
    env = {
        **os.environ,
        "DATABASE_URL_LOCAL": url,
        "BENCH_TABLES": str(tables),
        "INVOKE_MIGRATIONS_METADATA": "bench.sync_bench:metadata",
        "INVOKE_MIGRATIONS_LOG_FILE": str(Path(tempfile.gettempdir()) / "sync-bench.jsonl"),
    }
    probe = (
        "import resource, subprocess, sys, time; s = time.perf_counter(); "
        "c = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"
        ".returncode; e = time.perf_counter() - s; "
        "print(e, c, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "invoke", *task],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(output[0]), int(output[1]), int(output[2]) / 1024


def time_apply(url: str, rounds: int) -> list[float]:
    """`local.sync` adding the missing columns, in process; the columns are dropped again
    between rounds."""
    from tasks.schema.sync import sync

    models = metadata()
    engine = sa.create_engine(url)
    times = []
    for _ in range(rounds):
        with engine.connect() as connection:
            drop_missing_columns(connection, models)
        session = _session(models)
        started = time.perf_counter()
        plan = sync(session)
        times.append(time.perf_counter() - started)
        assert not plan.items, "sync left differences"
        assert len(session.record.details["applied"]) == -(-len(models.tables) // MISSING_EVERY)
    engine.dispose()
    return times


def _session(models: sa.MetaData) -> Any:
    from tasks.core.confirmation import Confirmer
    from tasks.core.console import Console
    from tasks.core.run_log import RunRecord
    from tasks.core.session import Session
    from tasks.core.settings import DEFAULTS, settings_from_mapping

    console = Console(stdout=open(os.devnull, "w"), stderr=sys.stderr)  # noqa: PTH123, SIM115
    session = Session(
        settings=settings_from_mapping(DEFAULTS),
        record=RunRecord("local", "local.sync", {}),
        confirmer=Confirmer(assume_yes=True),
        console=console,
    )
    session._metadata = models
    return session


# --- report -------------------------------------------------------------------------------------


def describe(times: list[float]) -> str:
    return f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cli-rounds", type=int, default=3)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    options = parser.parse_args()
    os.environ["BENCH_TABLES"] = str(options.tables)
    models = metadata()

    with throwaway_database(options.admin_url, options.keep) as url:
        os.environ["DATABASE_URL_LOCAL"] = url
        started = time.perf_counter()
        build_schema(url, models)
        columns = sum(len(table.columns) for table in models.tables.values())
        print(
            f"schema: {len(models.tables)} tables, {columns} columns, "
            f"{len(models.tables) // MISSING_EVERY} missing a column "
            f"(built in {time.perf_counter() - started:.1f} s)"
        )
        functions = {
            "bulk reflection (anchor)": bulk_reflection,
            "MetaData.reflect()": metadata_reflect,
            "alembic compare_metadata": alembic_compare,
            "local.sync --check": sync_check,
        }
        print(agreement(url, models))
        times = measure(url, models, functions, options.rounds)
        print(f"\nin process, {options.rounds} rounds, fresh connection per call:")
        for name, values in times.items():
            print(f"  {name:<26} {describe(values)}")
        medians = {name: statistics.median(values) for name, values in times.items()}
        check = medians["local.sync --check"]
        alembic = medians["alembic compare_metadata"]
        anchor = medians["bulk reflection (anchor)"]
        print(
            f"  ratios (medians): check / alembic = {check / alembic:.2f} (target <= 0.50), "
            f"check / bulk reflection = {check / anchor:.2f} (target <= 1.30), "
            f"check / MetaData.reflect() = {check / medians['MetaData.reflect()']:.2f}"
        )
        fastest = {name: min(values) for name, values in times.items()}
        print(
            f"  ratios (fastest runs): check / alembic = "
            f"{fastest['local.sync --check'] / fastest['alembic compare_metadata']:.2f}, "
            f"check / bulk reflection = "
            f"{fastest['local.sync --check'] / fastest['bulk reflection (anchor)']:.2f}"
        )

        print("\npeak Python memory (tracemalloc, separate pass):")
        for name, function in functions.items():
            print(f"  {name:<26} {peak_memory(url, models, function):.1f} MiB")

        print(f"\nend to end (subprocess, start-up included, {options.cli_rounds} rounds):")
        for label, task in (
            ("invoke local.sync --check", ("local.sync", "--check")),
            ("invoke local.check", ("local.check",)),
        ):
            runs = [cli(url, options.tables, *task) for _ in range(options.cli_rounds)]
            codes = sorted({code for _, code, _ in runs})
            rss = max(rss for _, _, rss in runs)
            print(
                f"  {label:<26} {describe([wall for wall, _, _ in runs])}, exit {codes}, "
                f"max RSS {rss:.0f} MiB"
            )

        applied = time_apply(url, max(1, options.cli_rounds))
        print(
            f"\nlocal.sync adding {len(models.tables) // MISSING_EVERY} missing columns "
            f"(compare, apply, verify, commit): {describe(applied)}"
        )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"bench process max RSS: {rss:.0f} MiB")


def agreement(url: str, models: sa.MetaData) -> str:
    """Both comparisons on one connection: do they find the same differences?"""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tasks.core.alembic_config import comparison_options
    from tasks.schema.fast_diff import keys_from_alembic
    from tasks.schema.sync import make_plan

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts=comparison_options())
            alembic = keys_from_alembic(compare_metadata(context, models))
            plan = make_plan(connection, models)
    finally:
        engine.dispose()
    ours = {key for item in plan.items for key in item.alembic_keys}
    verdict = "the same" if ours == alembic else f"DIFFERENT: {sorted(ours ^ alembic)[:5]}"
    return (
        f"differences: alembic {len(alembic)}, sync {len(ours)} ({len(plan.to_apply)} to add, "
        f"{len(plan.left_alone)} for a revision): {verdict}"
    )


if __name__ == "__main__":
    main()
