"""A long history against its squashed baseline, measured in the same run.

    .venv/bin/python bench/squash_bench.py [--revisions 500] [--rounds 5] [--ci-check]

1. Generates a history of N revisions (tests/revision_chains.py `long_history`: tables with a
   foreign key each, added columns, indexes, renamed columns in batch mode, a named enum, a data
   migration every 50 revisions) and times `invoke dev.squash -r <last>` on a copy, proving the
   baseline on PostgreSQL and SQLite.
2. Builds fresh databases from base, through the old chain and through the baseline, alternating,
   on PostgreSQL and SQLite: Alembic's `command.upgrade` in this process (net of start-up:
   reading the revision files, env.py, the statements) and `alembic upgrade head` end to end.
   Reports medians and the ratio chain / baseline (goal: at least 20x at 500 revisions).
3. With --ci-check: `invoke ci.check` once before and once after the squash (stairway on both
   dialects, lint), for the time a pipeline spends.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def environment(tmp: Path, ini: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL_", "INVOKE_MIGRATIONS_", "ENVIRONMENT"))
    }
    env.update(
        {
            "INVOKE_MIGRATIONS_LOG_FILE": str(tmp / "migrations.jsonl"),
            "INVOKE_MIGRATIONS_ALEMBIC_INI": str(ini),
            "INVOKE_MIGRATIONS_CI_DIALECTS": "postgresql,sqlite",
            "INVOKE_MIGRATIONS_CI_POSTGRES_URL": PG_ADMIN,
            "DATABASE_URL_LOCAL": f"sqlite:///{tmp / 'never-created.sqlite3'}",
            "MIGRATIONS_OPERATOR": "bench@example.com",
            "ENVIRONMENT": "development",
        }
    )
    return env


def run(argv: list[str], env: dict[str, str], *, check: bool = True) -> float:
    started = time.perf_counter()
    completed = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if check and completed.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{completed.stdout}\n{completed.stderr}")
    return elapsed


def pg_database() -> str:
    import sqlalchemy

    name = f"bench_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(
        PG_ADMIN.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_pg(url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        PG_ADMIN.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as connection:
        connection.exec_driver_sql(
            f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'
        )
    engine.dispose()


def fresh(tmp: Path, dialect: str) -> str:
    if dialect == "sqlite":
        return f"sqlite:///{tmp / uuid.uuid4().hex}.sqlite3"
    return pg_database()


def build(tmp: Path, ini: Path, env: dict[str, str], dialect: str) -> float:
    """`alembic upgrade head` on a fresh database, end to end (its own process)."""
    url = fresh(tmp, dialect)
    try:
        return run(
            [str(BIN / "alembic"), "-c", str(ini), "upgrade", "head"],
            {**env, "DATABASE_URL_DEVELOPMENT": url},
        )
    finally:
        if url.startswith("postgresql"):
            drop_pg(url)


def build_in_process(tmp: Path, ini: Path, env: dict[str, str], dialect: str) -> float:
    """The same upgrade inside this process, net of start-up (interpreter and imports): reading
    the revision files, env.py and the statements."""
    import logging

    from alembic import command
    from alembic.config import Config

    logging.disable(logging.INFO)  # env.py's fileConfig logs every revision at INFO
    url = fresh(tmp, dialect)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({**env, "DATABASE_URL_DEVELOPMENT": url})
    try:
        config = Config(str(ini), stdout=open(os.devnull, "w"))  # noqa: SIM115, PTH123
        started = time.perf_counter()
        command.upgrade(config, "head")
        return time.perf_counter() - started
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if url.startswith("postgresql"):
            drop_pg(url)


def main() -> None:
    from tests.revision_chains import empty_chain, long_history

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ci-check", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="squash-bench-") as name:
        tmp = Path(name)
        chain = empty_chain(tmp / "chain", counter=False)
        ids = long_history(chain, args.revisions)
        shutil.copytree(tmp / "chain", tmp / "squashed")
        chain_ini = tmp / "chain" / "alembic.ini"
        squashed_ini = tmp / "squashed" / "alembic.ini"
        chain_env = environment(tmp, chain_ini)
        squashed_env = environment(tmp, squashed_ini)
        print(f"history: {args.revisions} revisions, {args.rounds} rounds (medians)")

        seconds = run([str(BIN / "invoke"), "dev.squash", "-r", ids[-1]], squashed_env)
        versions = list((tmp / "squashed" / "alembic" / "versions").glob("*.py"))
        size = versions[0].stat().st_size if len(versions) == 1 else 0
        print(f"dev.squash -r {ids[-1]} (proven on postgresql, sqlite): {seconds:.2f} s")
        print(f"baseline file: {len(versions)} file, {size / 1024:.0f} KiB")

        for dialect in ("postgresql", "sqlite"):
            timings: dict[str, list[float]] = {key: [] for key in ("ct", "cn", "bt", "bn")}
            for _ in range(args.rounds):
                timings["cn"].append(build_in_process(tmp, chain_ini, chain_env, dialect))
                timings["bn"].append(build_in_process(tmp, squashed_ini, squashed_env, dialect))
                timings["ct"].append(build(tmp, chain_ini, chain_env, dialect))
                timings["bt"].append(build(tmp, squashed_ini, squashed_env, dialect))
            ct, cn, bt, bn = (statistics.median(timings[key]) for key in ("ct", "cn", "bt", "bn"))
            print(
                f"{dialect:<10} fresh database, in process: chain {cn:6.3f} s, baseline "
                f"{bn:6.3f} s, ratio {cn / bn:5.1f}x; end to end (alembic upgrade head): chain "
                f"{ct:6.2f} s, baseline {bt:6.2f} s, ratio {ct / bt:4.1f}x"
            )

        if args.ci_check:
            for label, env in (("before", chain_env), ("after", squashed_env)):
                seconds = run([str(BIN / "invoke"), "ci.check"], env, check=False)
                print(f"ci.check {label} the squash: {seconds:.1f} s")


if __name__ == "__main__":
    main()
