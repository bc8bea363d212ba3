"""Start-up and overhead of the tasks against plain Alembic, measured in the same run.

    .venv/bin/python bench/overhead_bench.py [--runs 7] [--chain 500]

Reports medians and ratios against the anchor measured alongside (the machine is noisy):
1. `invoke --list` against `python -c pass` (target: under 0.3 s absolute);
2. `invoke local.current` against `alembic current` on the same SQLite database (target: at
   most 15% slower);
3. reads on PostgreSQL (issue 18.9): `invoke dev.current`, `dev.history`, `dev.heads` and
   `dev.show -r head` against `alembic current`, `history`, `heads` and `show head` on the same
   database at head (target: at most 5% slower); `--reads-only` runs just these;
4. upgrading a generated chain of N revisions: `invoke local.upgrade` against
   `alembic upgrade head` on fresh SQLite files, and `invoke dev.upgrade` (lock and audit row
   included) against `alembic upgrade head` on fresh PostgreSQL databases (target: at most 10%
   slower).
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
BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def median_pair(runs: int, anchor, candidate) -> tuple[float, float]:
    """Alternate the two so drift in machine load hits both alike."""
    a, c = [], []
    for _ in range(runs):
        a.append(anchor())
        c.append(candidate())
    return statistics.median(a), statistics.median(c)


def report(name: str, anchor_name: str, anchor: float, candidate: float) -> None:
    ratio = candidate / anchor
    print(f"{name:<44} {candidate:8.3f} s   {anchor_name:<28} {anchor:8.3f} s   ratio {ratio:5.2f}")


def base_env(tmp: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL_", "INVOKE_MIGRATIONS_", "ENVIRONMENT"))
    }
    env.update(
        {
            "INVOKE_MIGRATIONS_LOG_FILE": str(tmp / "migrations.jsonl"),
            "INVOKE_MIGRATIONS_BACKUP_DIR": str(tmp / "backups"),
            "MIGRATIONS_OPERATOR": "bench@example.com",
        }
    )
    return env


def write_chain(directory: Path, length: int) -> Path:
    """A private alembic.ini and alembic/ with `length` revisions, each creating a small table."""
    shutil.copy2(ROOT / "alembic.ini", directory / "alembic.ini")
    shutil.copytree(
        ROOT / "alembic",
        directory / "alembic",
        ignore=shutil.ignore_patterns("__pycache__", "versions"),
    )
    versions = directory / "alembic" / "versions"
    versions.mkdir()
    previous = None
    for index in range(length):
        revision = f"{index:012x}"
        (versions / f"{revision}_step.py").write_text(
            f'"""step {index}"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
            f"revision = {revision!r}\ndown_revision = {previous!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n    op.create_table('bench_{index}', "
            "sa.Column('id', sa.Integer, primary_key=True), sa.Column('name', sa.String(40)))\n\n\n"
            f"def downgrade():\n    op.drop_table('bench_{index}')\n"
        )
        previous = revision
    return directory / "alembic.ini"


def empty_metadata_module(directory: Path) -> str:
    """The chain's tables are not the project's models; compare against empty metadata."""
    (directory / "bench_models.py").write_text(
        "from sqlalchemy import MetaData\nmetadata = MetaData()\n"
    )
    return "bench_models:metadata"


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


def drop_pg_databases() -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        PG_ADMIN.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as connection:
        names = [
            row[0]
            for row in connection.exec_driver_sql(
                r"SELECT datname FROM pg_database WHERE datname LIKE 'bench\_%%'"
            )
        ]
        for name in names:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--chain", type=int, default=500)
    parser.add_argument("--chain-runs", type=int, default=3)
    parser.add_argument("--reads-only", action="store_true", help="only the PostgreSQL reads")
    args = parser.parse_args()
    invoke, alembic = str(BIN / "invoke"), str(BIN / "alembic")

    with tempfile.TemporaryDirectory(prefix="overhead-bench-") as name:
        tmp = Path(name)
        env = base_env(tmp)
        if args.reads_only:
            try:
                reads(args.runs, env, invoke, alembic)
            finally:
                drop_pg_databases()
            return
        print(f"runs: {args.runs} (medians), chain: {args.chain} revisions x {args.chain_runs}")

        anchor, candidate = median_pair(
            args.runs,
            lambda: timed([sys.executable, "-c", "pass"], env),
            lambda: timed([invoke, "--list"], env),
        )
        report("invoke --list", "python -c pass", anchor, candidate)

        database = tmp / "current.sqlite3"
        current_env = {**env, "DATABASE_URL_LOCAL": f"sqlite:///{database}", "ENVIRONMENT": "local"}
        subprocess.run(
            [invoke, "local.upgrade"],
            cwd=ROOT,
            env=current_env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        anchor, candidate = median_pair(
            args.runs,
            lambda: timed([alembic, "current"], current_env),
            lambda: timed([invoke, "local.current"], current_env),
        )
        report("invoke local.current", "alembic current", anchor, candidate)

        try:
            reads(args.runs, env, invoke, alembic)
        finally:
            drop_pg_databases()

        chain_dir = tmp / "chain"
        chain_dir.mkdir()
        ini = write_chain(chain_dir, args.chain)
        chain_env = {
            **env,
            "INVOKE_MIGRATIONS_ALEMBIC_INI": str(ini),
            "INVOKE_MIGRATIONS_METADATA": empty_metadata_module(chain_dir),
            "PYTHONPATH": str(chain_dir),
        }

        def fresh_sqlite() -> dict[str, str]:
            url = f"sqlite:///{tmp / uuid.uuid4().hex}.sqlite3"
            return {**chain_env, "DATABASE_URL_LOCAL": url, "ENVIRONMENT": "local"}

        anchor, candidate = median_pair(
            args.chain_runs,
            lambda: timed([alembic, "-c", str(ini), "upgrade", "head"], fresh_sqlite()),
            lambda: timed([invoke, "local.upgrade"], fresh_sqlite()),
        )
        report(
            f"invoke local.upgrade ({args.chain} revisions)",
            "alembic upgrade head",
            anchor,
            candidate,
        )

        def fresh_pg() -> dict[str, str]:
            return {
                **chain_env,
                "DATABASE_URL_DEVELOPMENT": pg_database(),
                "ENVIRONMENT": "development",
            }

        try:
            anchor, candidate = median_pair(
                args.chain_runs,
                lambda: timed([alembic, "-c", str(ini), "upgrade", "head"], fresh_pg()),
                lambda: timed([invoke, "dev.upgrade"], fresh_pg()),
            )
            report(
                f"invoke dev.upgrade ({args.chain}, PG, lock+audit)",
                "alembic upgrade head",
                anchor,
                candidate,
            )
        finally:
            drop_pg_databases()


READS = (
    ("current", ["current"], ["current"]),
    ("history", ["history"], ["history"]),
    ("heads", ["heads"], ["heads"]),
    ("show -r head", ["show", "-r", "head"], ["show", "head"]),
)


def reads(runs: int, env: dict[str, str], invoke: str, alembic: str) -> None:
    """Whole processes, alternating, on one PostgreSQL database at the project's head."""
    url = pg_database()
    read_env = {**env, "DATABASE_URL_DEVELOPMENT": url, "ENVIRONMENT": "development"}
    subprocess.run(
        [invoke, "dev.upgrade"], cwd=ROOT, env=read_env, check=True, stdout=subprocess.DEVNULL
    )
    for label, ours, theirs in READS:
        anchor, candidate = median_pair(
            runs,
            lambda theirs=theirs: timed([alembic, *theirs], read_env),
            lambda ours=ours: timed([invoke, f"dev.{ours[0]}", *ours[1:]], read_env),
        )
        report(f"invoke dev.{label} (PG)", f"alembic {' '.join(theirs)}", anchor, candidate)


if __name__ == "__main__":
    main()
