"""`invoke fleet.upgrade` against a shell loop of `alembic upgrade head`, in the same run.

    .venv/bin/python bench/fleet_bench.py [--databases 50] [--schemas 200] [--revisions 20]

Two legs, each from base to head of a generated chain (every revision creates a table with an
index), each timed end to end as a user would run it, start-up included:
1. N PostgreSQL databases: `fleet.upgrade --parallel 8` against one `alembic upgrade head`
   process per database (target: fleet <= 0.25x the loop's wall time);
2. M schemas in one PostgreSQL database: `fleet.upgrade --parallel 8` against one
   `alembic -x schema=NAME upgrade head` process per schema (target: <= 0.15x).
The databases and schemas are created fresh before each leg and dropped at the end. Peak memory
is each process's own peak resident set (a wrapper reads ru_maxrss of just that command); for
the loop the largest of its processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def write_chain(directory: Path, revisions: int) -> Path:
    """A copy of the project's alembic.ini and env.py with a generated chain of revisions."""
    shutil.copy2(ROOT / "alembic.ini", directory / "alembic.ini")
    shutil.copytree(ROOT / "alembic", directory / "alembic", ignore=shutil.ignore_patterns("*.pyc"))
    versions = directory / "alembic" / "versions"
    for path in versions.glob("*.py"):
        path.unlink()
    parent = None
    for index in range(revisions):
        revision = f"b{index:011d}"
        (versions / f"{revision}.py").write_text(
            f'"""bench {index}"""\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
            f"revision = {revision!r}\ndown_revision = {parent!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            "def upgrade() -> None:\n"
            f'    op.create_table("t{index}", sa.Column("id", sa.Integer, primary_key=True),\n'
            f'                    sa.Column("name", sa.String(40)))\n'
            f'    op.create_index("ix_t{index}_name", "t{index}", ["name"])\n\n\n'
            "def downgrade() -> None:\n"
            f'    op.drop_table("t{index}")\n'
        )
        parent = revision
    return directory / "alembic.ini"


def admin(sql: str, database: str = "postgres") -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        PG.rsplit("/", 1)[0] + f"/{database}", isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as connection:
        for statement in sql.split(";\n"):
            if statement.strip():
                connection.exec_driver_sql(statement)
    engine.dispose()


def url(database: str) -> str:
    return PG.rsplit("/", 1)[0] + f"/{database}"


def environment(tmp: Path, ini: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL_", "INVOKE_MIGRATIONS_", "ENVIRONMENT"))
    }
    env.update(
        INVOKE_MIGRATIONS_ALEMBIC_INI=str(ini),
        INVOKE_MIGRATIONS_LOG_FILE=str(tmp / "log.jsonl"),
        INVOKE_MIGRATIONS_BACKUP_DIR=str(tmp / "backups"),
        INVOKE_MIGRATIONS_DOTENV_DIR=str(tmp),
        MIGRATIONS_OPERATOR="bench@example.com",
    )
    return env


PEAK = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def run(argv: list[str], env: dict[str, str]) -> float:
    """Run one command; its own peak resident memory in MiB (a wrapper measures just it)."""
    completed = subprocess.run(
        [sys.executable, "-c", PEAK, *argv],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return int(completed.stdout.strip()) / 1024


def timed_leg(commands: list[list[str]], env_for: list[dict[str, str]]) -> tuple[float, float]:
    """Wall time of the commands one after the other, and the largest peak among them."""
    started = time.perf_counter()
    peaks = [run(argv, env) for argv, env in zip(commands, env_for, strict=True)]
    return time.perf_counter() - started, max(peaks)


def databases_leg(tmp: Path, ini: Path, count: int, prefix: str) -> dict[str, float]:
    names = [f"{prefix}_{index:03d}" for index in range(count)]
    env = environment(tmp, ini)
    fleet_file = tmp / "fleet.yaml"
    fleet_file.write_text(
        json.dumps({"migrations": {"fleets": {"bench": {"urls": [url(n) for n in names]}}}})
    )

    def fresh() -> None:
        admin(
            ";\n".join(
                f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE);\nCREATE DATABASE "{n}"' for n in names
            )
        )

    fresh()
    loop_env = [
        {**env, "ENVIRONMENT": "development", "DATABASE_URL_DEVELOPMENT": url(n)} for n in names
    ]
    loop, loop_rss = timed_leg(
        [[str(BIN / "alembic"), "-c", str(ini), "upgrade", "head"]] * count, loop_env
    )
    fresh()
    fleet, fleet_rss = timed_leg(
        [[str(BIN / "invoke"), "-f", str(fleet_file), "fleet.upgrade", "--parallel", "8"]], [env]
    )
    admin(";\n".join(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in names))
    return {"loop": loop, "fleet": fleet, "loop_rss": loop_rss, "fleet_rss": fleet_rss}


def schemas_leg(tmp: Path, ini: Path, count: int, prefix: str) -> dict[str, float]:
    database = f"{prefix}_schemas"
    schemas = [f"tenant_{index:03d}" for index in range(count)]
    env = environment(tmp, ini)
    env["BENCH_SCHEMAS_URL"] = url(database)
    fleet_file = tmp / "schemas.yaml"
    fleet_file.write_text(
        json.dumps(
            {
                "migrations": {
                    "fleets": {
                        "bench": {
                            "schemas": {"url_variable": "BENCH_SCHEMAS_URL", "like": "tenant_%"}
                        }
                    }
                }
            }
        )
    )

    def fresh() -> None:
        admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE);\nCREATE DATABASE "{database}"')
        admin(";\n".join(f'CREATE SCHEMA "{s}"' for s in schemas), database)

    fresh()
    loop_env = {**env, "ENVIRONMENT": "development", "DATABASE_URL_DEVELOPMENT": url(database)}
    loop, loop_rss = timed_leg(
        [
            [str(BIN / "alembic"), "-c", str(ini), "-x", f"schema={s}", "upgrade", "head"]
            for s in schemas
        ],
        [loop_env] * count,
    )
    fresh()
    fleet, fleet_rss = timed_leg(
        [[str(BIN / "invoke"), "-f", str(fleet_file), "fleet.upgrade", "--parallel", "8"]], [env]
    )
    admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {"loop": loop, "fleet": fleet, "loop_rss": loop_rss, "fleet_rss": fleet_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", type=int, default=50)
    parser.add_argument("--schemas", type=int, default=200)
    parser.add_argument("--revisions", type=int, default=20)
    options = parser.parse_args()
    prefix = f"bench_fleet_{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        ini = write_chain(tmp, options.revisions)
        rows = []
        if options.databases:
            figures = databases_leg(tmp, ini, options.databases, prefix)
            rows.append((f"{options.databases} databases", figures, 0.25))
        if options.schemas:
            figures = schemas_leg(tmp, ini, options.schemas, prefix)
            rows.append((f"{options.schemas} schemas in one database", figures, 0.15))
    print(f"{options.revisions} revisions each, base to head; fleet.upgrade --parallel 8\n")
    print("| Targets | loop of `alembic upgrade head` | `invoke fleet.upgrade` | Ratio | Target |")
    print("|---|---|---|---|---|")
    for name, figures, target in rows:
        ratio = figures["fleet"] / figures["loop"]
        verdict = "met" if ratio <= target else "MISSED"
        print(
            f"| {name} | {figures['loop']:.1f} s | {figures['fleet']:.1f} s | {ratio:.2f} "
            f"| <= {target} ({verdict}) |"
        )
    print(
        "\nPeak resident memory of one process (the loop's largest, the fleet's one): "
        + ", ".join(
            f"{name}: loop {f['loop_rss']:.0f} MiB, fleet {f['fleet_rss']:.0f} MiB"
            for name, f, _ in rows
        )
    )


if __name__ == "__main__":
    main()
