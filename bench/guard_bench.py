"""The statement guard's cost on a long protected upgrade, against the same upgrade unguarded.

    .venv/bin/python bench/guard_bench.py [--chain 500] [--runs 3] [--postgres]

Each run is `invoke prod.upgrade --yes` of a generated chain on a fresh database, in its own
process: guarded (as shipped) and unguarded (the same process with `statement_guard.for_plan`
replaced by "no guard", possible only from this bench) alternate, so drift in machine load hits
both alike. Each revision creates a table, bulk-inserts two rows (a parameterised statement the
plan did not show word for word: the guard parses it) and backfills a column (shown by the plan:
matched, not parsed). Prints the medians, their ratio, and the time spent inside the guard's
checks (and in its per-revision setup) as a share of the guarded run.
"""

from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(ROOT / "bench"))

from overhead_bench import base_env, drop_pg_databases, empty_metadata_module, pg_database  # noqa: E402

REVISION = '''"""step {index}"""
import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {previous!r}
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "bench_{index}",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(40)),
        sa.Column("nick", sa.String(40)),
    )
    op.bulk_insert(
        sa.table("bench_{index}", sa.column("id", sa.Integer), sa.column("name", sa.String)),
        [{{"id": 1, "name": "a"}}, {{"id": 2, "name": "b"}}],
    )
    op.execute("UPDATE bench_{index} SET nick = 'x' WHERE nick IS NULL")


def downgrade():
    op.drop_table("bench_{index}")
'''


def write_chain(directory: Path, length: int) -> Path:
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
        text = REVISION.format(index=index, revision=revision, previous=previous)
        (versions / f"{revision}_step.py").write_text(text)
        previous = revision
    return directory / "alembic.ini"


def child(mode: str, stats_file: str) -> None:
    """One `prod.upgrade --yes`, in this process, guarded or not; the guard's time to a file."""
    from invoke import Program

    from tasks.guard import statement_guard

    spent = [0.0, 0, 0]
    if mode == "unguarded":
        statement_guard.for_plan = lambda *args, **kwargs: None  # type: ignore[assignment]
    else:
        check = statement_guard.StatementGuard.check

        def timed_check(self, statement, parameters=None):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return check(self, statement, parameters)
            finally:
                spent[0] += time.perf_counter() - started
                spent[1], spent[2] = self.seen, self.parsed

        statement_guard.StatementGuard.check = timed_check  # type: ignore[method-assign]
        enter = statement_guard.StatementGuard.enter

        def timed_enter(self, revision):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return enter(self, revision)
            finally:
                spent[0] += time.perf_counter() - started

        statement_guard.StatementGuard.enter = timed_enter  # type: ignore[method-assign]
    started = time.perf_counter()
    try:
        Program(name="invoke", binary="invoke").run(
            ["invoke", "--search-root", str(ROOT), "prod.upgrade", "--yes", "--no-backup"],
            exit=False,
        )
    finally:
        total = time.perf_counter() - started
        Path(stats_file).write_text(
            json.dumps({"total": total, "guard": spent[0], "seen": spent[1], "parsed": spent[2]})
        )


def run(mode: str, env: dict[str, str], tmp: Path) -> dict[str, float]:
    stats = tmp / f"{uuid.uuid4().hex}.json"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--child", mode, "--stats", str(stats)],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    result = json.loads(stats.read_text())
    result["wall"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--child", choices=["guarded", "unguarded"])
    parser.add_argument("--stats")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.stats)
        return
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as name:
        tmp = Path(name)
        chain_dir = tmp / "chain"
        chain_dir.mkdir()
        ini = write_chain(chain_dir, args.chain)
        env = {
            **base_env(tmp),
            "INVOKE_MIGRATIONS_ALEMBIC_INI": str(ini),
            "INVOKE_MIGRATIONS_METADATA": empty_metadata_module(chain_dir),
            "PYTHONPATH": str(chain_dir),
        }

        def fresh() -> dict[str, str]:
            url = pg_database() if args.postgres else f"sqlite:///{tmp / uuid.uuid4().hex}.db"
            return {**env, "DATABASE_URL_PRODUCTION": url}

        guarded, unguarded = [], []
        try:
            for index in range(args.runs):  # alternate which goes first, too
                pair = [("unguarded", unguarded), ("guarded", guarded)]
                for mode, results in pair if index % 2 == 0 else reversed(pair):
                    results.append(run(mode, fresh(), tmp))
        finally:
            if args.postgres:
                drop_pg_databases()
        g = statistics.median(item["wall"] for item in guarded)
        u = statistics.median(item["wall"] for item in unguarded)
        g_in = statistics.median(item["total"] for item in guarded)
        u_in = statistics.median(item["total"] for item in unguarded)
        inside = statistics.median(item["guard"] / item["total"] for item in guarded)
        last = guarded[-1]
        dialect = "postgresql" if args.postgres else "sqlite"
        print(
            f"prod.upgrade --yes, {args.chain} revisions on {dialect}, {args.runs} runs (medians)\n"
            f"  unguarded {u:8.2f} s\n  guarded   {g:8.2f} s   ratio {g / u:5.3f}\n"
            f"  the task alone (no interpreter start): unguarded {u_in:.2f} s, guarded "
            f"{g_in:.2f} s, ratio {g_in / u_in:5.3f}\n"
            f"  inside the guard: {inside:.1%} of the guarded run; "
            f"{last['seen']} statements judged, {last['parsed']} parsed (not shown by the plan)"
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
