"""`alembic_internals.on_configure`: the one wrapper of Alembic's `EnvironmentContext.configure`
(checked on the installed Alembic), seen by every env.py, with its options as keywords."""

from __future__ import annotations

import io

import alembic
from alembic import command
from alembic.config import Config

from tasks.core import alembic_internals


def test_every_env_py_configure_passes_through_the_hook(tmp_path):
    scripts = tmp_path / "scripts"
    config = Config(str(tmp_path / "alembic.ini"), stdout=io.StringIO())
    command.init(config, str(scripts), template="generic")
    config = Config(str(tmp_path / "alembic.ini"), stdout=io.StringIO())
    config.set_main_option("sqlalchemy.url", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    seen: list[dict] = []

    def hook(_environment_context, options):
        seen.append(dict(options))
        return {**options, "version_table": "versions_seen_by_hook"}

    alembic_internals.on_configure(hook)
    alembic_internals.on_configure(hook)  # once per hook, however often installed
    try:
        command.stamp(config, "head")
    finally:
        alembic_internals._configure_hooks.remove(hook)

    assert len(seen) == 1, alembic.__version__
    assert "connection" in seen[0] and "target_metadata" in seen[0]
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    with engine.connect() as connection:
        tables = set(sqlalchemy.inspect(connection).get_table_names())
    engine.dispose()
    assert "versions_seen_by_hook" in tables  # what the hook returned is what Alembic got
