"""Revision chains written by tests: a private alembic.ini and alembic/ folder per test.

Built on `tests.helpers.copy_scripts` (selected through INVOKE_MIGRATIONS_ALEMBIC_INI), so the
repository's alembic/versions is never touched. Revisions record their own application: the
first one of an `empty_chain` creates the `applied` counter table and every revision made with
`record=True` inserts its id there, so tests can count how often each one really ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT
from tests.helpers import HEAD, ScriptCopy, copy_scripts

COUNTER = "applied"
LAST = "<last>"  # `Chain.add`: revise the chain's current last revision


@dataclass
class Chain:
    """A linear chain of revisions in a script copy; `add` appends one after the last."""

    scripts: ScriptCopy
    ids: list[str] = field(default_factory=list)

    @property
    def ini(self) -> Path:
        return self.scripts.ini

    @property
    def head(self) -> str | None:
        return self.ids[-1] if self.ids else None

    def use(self, project) -> Chain:  # type: ignore[no-untyped-def]
        """Point the project's tasks at this chain's alembic.ini."""
        project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(self.ini))
        return self

    def add(
        self,
        revision: str,
        message: str,
        upgrade: str = "pass",
        downgrade: str = "pass",
        *,
        record: bool = True,
        down_revision: str | None = LAST,
    ) -> str:
        """Write revision `revision` after the current last one (or `down_revision`).

        `upgrade`/`downgrade` are Python bodies using `op` and `sa`; with `record`, the upgrade
        first inserts the revision's id into the counter table and the downgrade deletes it.
        """
        parent = self.head if down_revision == LAST else down_revision
        up = textwrap.dedent(upgrade).strip() or "pass"
        down = textwrap.dedent(downgrade).strip() or "pass"
        if record:
            up = f"op.execute(\"INSERT INTO {COUNTER} (revision) VALUES ('{revision}')\")\n{up}"
            down = f"{down}\nop.execute(\"DELETE FROM {COUNTER} WHERE revision = '{revision}'\")"
        source = (
            f'"""{message}\n\nRevision ID: {revision}\nRevises: {parent or ""}\n"""\n\n'
            "import sqlalchemy as sa\n"
            "from alembic import op\n\n"
            f"revision = {revision!r}\n"
            f"down_revision = {parent!r}\n"
            "branch_labels = None\n"
            "depends_on = None\n\n\n"
            f"def upgrade() -> None:\n{textwrap.indent(up, '    ')}\n\n\n"
            f"def downgrade() -> None:\n{textwrap.indent(down, '    ')}\n"
        )
        (self.scripts.versions / f"{revision}_{_slug(message)}.py").write_text(source)
        self.ids.append(revision)
        return revision


def empty_chain(directory: Path, *, counter: bool = True) -> Chain:
    """A script copy without the repository's revisions; with `counter`, its first revision
    (`c0000000000c`) creates the counter table."""
    scripts = copy_scripts(directory)
    for path in scripts.versions.glob("*.py"):
        path.unlink()
    chain = Chain(scripts)
    if counter:
        chain.add(
            "c0000000000c",
            "counter table",
            f"""
            op.create_table(
                "{COUNTER}",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("revision", sa.String(32), nullable=False),
            )
            """,
            f'op.drop_table("{COUNTER}")',
            record=False,
        )
    return chain


def repository_chain(directory: Path) -> Chain:
    """A script copy with the repository's own revisions, to extend after its head."""
    return Chain(copy_scripts(directory), ids=[HEAD])


def counts(url: str) -> dict[str, int]:
    """How many times each revision recorded itself in the counter table."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text(f"SELECT revision, count(*) FROM {COUNTER} GROUP BY revision")
            )
            return {revision: number for revision, number in rows}
    finally:
        engine.dispose()


def scalar(url: str, sql: str, **params: object) -> object:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text(sql), params).scalar()
    finally:
        engine.dispose()


def spawn(*argv: str) -> subprocess.Popen[str]:
    """`invoke ARGV...` in a subprocess with the test's environment, not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", *argv],
        cwd=ROOT,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL: no cleanup, no finally blocks, the way an OOM killer or a lost VM ends a run."""
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)


def wait_until(condition: Callable[[], object], *, timeout: float = 30, what: str = "") -> object:
    """Poll `condition` until it is truthy; fail after a generous `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.05)


def create_table(name: str) -> str:
    """A revision body creating a one-column table `name`."""
    return f'op.create_table("{name}", sa.Column("id", sa.Integer))'


def _slug(message: str) -> str:
    return "_".join(message.lower().split())[:40]


def long_history(chain: Chain, count: int) -> list[str]:
    """A history of `count` revisions like a project's years: tables with a foreign key to the
    previous one, added columns, indexes, renamed columns, a named enum and a data migration
    every 50 revisions; portable to SQLite, PostgreSQL and MariaDB (batch mode for renames)."""
    table = None
    previous = None
    for number in range(count):
        revision = f"h{number:011d}"
        kind = number % 5
        if kind == 0 or table is None:
            previous, table = table, f"t{number // 5:04d}"
            chain.add(revision, f"create {table}", *_create(table, previous, number), record=False)
        elif kind == 1:
            chain.add(
                revision,
                f"add {table}.c{number}",
                f'op.add_column("{table}", sa.Column("c{number}", sa.Integer, '
                'server_default="0", nullable=True))',
                f'op.drop_column("{table}", "c{number}")',
                record=False,
            )
        elif kind == 2:
            chain.add(
                revision,
                f"index {table}.c{number - 1}",
                f'op.create_index("ix_{table}_c{number - 1}", "{table}", ["c{number - 1}"])',
                f'op.drop_index("ix_{table}_c{number - 1}", table_name="{table}")',
                record=False,
            )
        elif kind == 3:
            chain.add(
                revision, f"rename {table}.name", *_rename(table, "name", "title"), record=False
            )
        elif number % 50 == 4:
            chain.add(
                revision,
                f"seed {table}",
                f"op.execute(\"INSERT INTO {table} (title, status) VALUES ('seed', 'new')\")",
                f'op.execute("DELETE FROM {table}")',
                record=False,
            )
        else:
            chain.add(
                revision,
                f"add {table}.note",
                f'op.add_column("{table}", sa.Column("note", sa.String(200), '
                f'comment="note {number}"))',
                f'op.drop_column("{table}", "note")',
                record=False,
            )
    return chain.ids


def _create(table: str, previous: str | None, number: int) -> tuple[str, str]:
    parent = (
        f'sa.Column("parent_id", sa.Integer, sa.ForeignKey("{previous}.id", '
        f'name="fk_{table}_parent", ondelete="CASCADE"), nullable=True),'
        if previous
        else ""
    )
    enum = "status_kind" if number == 0 else None
    status = (
        f'sa.Column("status", sa.Enum("new", "done", name="{enum}"), nullable=True),'
        if enum
        else 'sa.Column("status", sa.String(20), nullable=True),'
    )
    upgrade = f"""
        op.create_table(
            "{table}",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(50), nullable=False, server_default="x"),
            {status}
            {parent}
            sa.Column("created_at", sa.DateTime, server_default=sa.func.now()),
        )
        """
    downgrade = f'op.drop_table("{table}")'
    if enum:
        downgrade += (
            '\nif op.get_context().dialect.name == "postgresql":\n'
            f'    op.execute("DROP TYPE {enum}")'
        )
    return upgrade, downgrade


def _rename(table: str, old: str, new: str) -> tuple[str, str]:
    def body(source: str, target: str) -> str:
        return (
            f'with op.batch_alter_table("{table}") as batch_op:\n'
            f'    batch_op.alter_column("{source}", new_column_name="{target}", '
            "existing_type=sa.String(50), existing_nullable=False, "
            'existing_server_default="x")'
        )

    return body(old, new), body(new, old)
