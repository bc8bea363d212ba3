"""What the per-statement lock check and the failed-revision bookkeeping cost on MariaDB.

    .venv/bin/python bench/mariadb_upgrade_bench.py [--chain 100] [--runs 3]

Upgrades a generated chain of N revisions (each: one CREATE TABLE, one INSERT) on fresh MariaDB
databases with `invoke dev.upgrade` (lock, lock check before every statement, progress row per
revision, audit row) and with plain `alembic upgrade head`, and prints the medians and their
ratio. Needs the MariaDB server of the tests (TEST_MYSQL_URL, default root@127.0.0.1:3306).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ADMIN = os.environ.get("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def chain(directory: Path, count: int) -> Path:
    from tests.revision_chains import empty_chain

    built = empty_chain(directory, counter=True)
    for index in range(count):
        revision = f"b{index:011d}"
        built.add(
            revision, f"table {index}", f'op.create_table("t{index}", sa.Column("id", sa.Integer))'
        )
    return built.ini


def database(name: str, *, drop: bool = False) -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS `{name}`"))
        if not drop:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE `{name}`"))
    engine.dispose()
    return engine.url.set(database=name).render_as_string(hide_password=False)


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chain", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="mariadb-bench-") as tmp:
        ini = chain(Path(tmp) / "scripts", options.chain)
        results: dict[str, list[float]] = {"invoke dev.upgrade": [], "alembic upgrade head": []}
        for _ in range(options.runs):
            for label, argv in (
                ("invoke dev.upgrade", [str(bin_dir / "invoke"), "dev.upgrade"]),
                (
                    "alembic upgrade head",
                    [str(bin_dir / "alembic"), "-c", str(ini), "upgrade", "head"],
                ),
            ):
                name = f"bench_{uuid.uuid4().hex[:8]}"
                env = {
                    **os.environ,
                    "DATABASE_URL_DEVELOPMENT": database(name),
                    "ENVIRONMENT": "development",
                    "INVOKE_MIGRATIONS_ALEMBIC_INI": str(ini),
                    "INVOKE_MIGRATIONS_LOG_FILE": str(Path(tmp) / "log.jsonl"),
                    "MIGRATIONS_OPERATOR": "bench@example.com",
                }
                try:
                    results[label].append(timed(argv, env))
                finally:
                    database(name, drop=True)
        tasks, plain = (statistics.median(values) for values in results.values())
        print(f"{options.chain} revisions on MariaDB, median of {options.runs}:")
        print(f"  invoke dev.upgrade   {tasks:6.2f} s")
        print(f"  alembic upgrade head {plain:6.2f} s")
        print(f"  ratio                {tasks / plain:6.2f}x")


if __name__ == "__main__":
    main()
