"""Small applications written the way real teams write them, for adoption tests (issue 17).

Each is a package under tmp (`shop_<id>`) with its own models, `alembic.ini`, `migrations/`
folder, `env.py` and a history of three revisions, in one of the env.py shapes found in the
wild (Alembic's cookbook and templates):

- `sync`: `alembic init`'s env.py (`engine_from_config` on `sqlalchemy.url`), with the
  application's metadata and its own comparison options;
- `cookbook`: "Sharing a Connection", `config.attributes["connection"]`;
- `async`: the async template's `run_sync`, sharing the caller's connection when given one
  (Alembic's cookbook "Programmatic API use (connection sharing) With Asyncio");
- `own_engine`: an engine built from the application's own settings (`SHOP_DATABASE_URL`);
- `own_engine_fixed`: the same with the README's one-line change.

The tasks are driven through a subprocess `invoke`, as a team runs them.
"""

from __future__ import annotations

import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

MODELS = """\
from sqlalchemy import Column, ForeignKey, Integer, String, text
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
    name = Column(String(50), nullable=False)


# Alphabetically before "users", which it refers to: creation order must follow the keys.
class Address(Base):
    __tablename__ = "addresses"
    id = Column(Integer, primary_key=True)
    user_id = Column(Integer, ForeignKey("users.id"), nullable=False, index=True)
    email = Column(String(100), nullable=False)


class Order(Base):
    __tablename__ = "orders"
    id = Column(Integer, primary_key=True)
    user_id = Column(Integer, ForeignKey("users.id"), nullable=False)
    total = Column(Integer, nullable=False, server_default=text("0"))
"""

SETTINGS = """\
import os

DATABASE_URL = os.environ.get("SHOP_DATABASE_URL", "sqlite:///shop-default.sqlite3")
"""

INI = """\
[alembic]
script_location = {script_location}
prepend_sys_path = .
sqlalchemy.url = driver://user:pass@localhost/dbname

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

REVISIONS = {
    "a1_users": (
        "a1a1a1a1a1a1",
        None,
        """
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
    )
""",
        '    op.drop_table("users")\n',
    ),
    "a2_addresses": (
        "a2a2a2a2a2a2",
        "a1a1a1a1a1a1",
        """
    op.create_table(
        "addresses",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("email", sa.String(100), nullable=False),
    )
    op.create_index("ix_addresses_user_id", "addresses", ["user_id"])
""",
        '    op.drop_index("ix_addresses_user_id", "addresses")\n    op.drop_table("addresses")\n',
    ),
    "a3_orders": (
        "a3a3a3a3a3a3",
        "a2a2a2a2a2a2",
        """
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
""",
        '    op.drop_table("orders")\n',
    ),
}

# A fourth revision that creates a table, then fails.
FAILING = (
    "a4a4a4a4a4a4",
    "a3a3a3a3a3a3",
    """
    op.create_table("notes", sa.Column("id", sa.Integer(), primary_key=True))
    op.execute("SELECT no_such_column FROM users")
""",
    '    op.drop_table("notes")\n',
)

_OFFLINE = """
def run_migrations_offline():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
"""

ENV_PY = {
    "sync": """\
from alembic import context
from sqlalchemy import engine_from_config, pool

from {package}.models import Base

config = context.config
target_metadata = Base.metadata
{offline}

def include_object(obj, name, type_, reflected, compare_to):
    return not (type_ == "table" and name.startswith("legacy_"))


def run_migrations_online():
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {{}}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=include_object,
            compare_server_default=False,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
""",
    "cookbook": """\
from alembic import context
from sqlalchemy import engine_from_config, pool

from {package}.models import Base

config = context.config
target_metadata = Base.metadata
{offline}

def run_migrations_online():
    connectable = config.attributes.get("connection", None)
    if connectable is None:
        connectable = engine_from_config(
            config.get_section(config.config_ini_section, {{}}),
            prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        ).connect()
    context.configure(connection=connectable, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
""",
    "async": """\
import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from {package}.models import Base

config = context.config
target_metadata = Base.metadata
{offline}

def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    connectable = async_engine_from_config(
        config.get_section(config.config_ini_section, {{}}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    async with connectable.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await connectable.dispose()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection", None)
    if connectable is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connectable)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
""",
    "own_engine": """\
from alembic import context
from sqlalchemy import create_engine

from {package}.models import Base
from {package}.settings import DATABASE_URL

config = context.config
target_metadata = Base.metadata
{offline}

def run_migrations_online():
    connectable = create_engine(DATABASE_URL)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
""",
}
# An env.py that runs only in a worker thread of its application's event loop, calling back
# into it (AnyIO's `from_thread.run`, as Prefect's does): plain `alembic` cannot run it.
ENV_PY["anyio_worker"] = (
    ENV_PY["async"]
    .replace("import asyncio\n", "import anyio.from_thread\n")
    .replace(
        """    connectable = config.attributes.get("connection", None)
    if connectable is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connectable)""",
        "    anyio.from_thread.run(run_async_migrations)",
    )
)
# The README's one-line change: the URL the tasks put in sqlalchemy.url, the application's own
# setting where the ini has none (plain `alembic`).
ENV_PY["own_engine_fixed"] = ENV_PY["own_engine"].replace(
    "create_engine(DATABASE_URL)",
    'create_engine(config.get_main_option("sqlalchemy.url", DATABASE_URL))',
)
# mlflow's: a new connection from the engine of the connection the caller shares.
ENV_PY["shared_engine"] = ENV_PY["sync"].replace(
    """    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {{}}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )""",
    """    shared = config.attributes.get("connection")
    connectable = shared.engine if shared is not None else engine_from_config(
        config.get_section(config.config_ini_section, {{}}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )""",
)

MAKO = '''\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''


@dataclass
class Shop:
    package: str
    folder: Path
    ini: Path
    versions: Path

    def add_failing_revision(self) -> str:
        write_revision(self.versions, "a4_notes", *FAILING)
        return FAILING[0]


def write_revision(
    versions: Path, name: str, rev: str, down: str | None, upgrade: str, downgrade: str
) -> None:
    body = textwrap.indent(textwrap.dedent(upgrade).strip(), "    ")
    source = (
        f'"""{name}"""\nfrom alembic import op\nimport sqlalchemy as sa\n\n'
        f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
        f"depends_on = None\n\n\ndef upgrade():\n{body}\n"
        f"\n\ndef downgrade():\n{downgrade}"
    )
    (versions / f"{name}.py").write_text(source)


def make_shop(
    project, env_kind: str = "sync", *, package_location: bool = False, async_models: bool = False
) -> Shop:
    """Write the application under `project.tmp / "apps"` and point the tasks at it."""
    package = f"shop_{uuid.uuid4().hex[:8]}"
    apps = project.tmp / "apps"
    folder = apps / package
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "migrations" / "__init__.py").write_text("")
    (folder / "models.py").write_text(MODELS)
    (folder / "settings.py").write_text(SETTINGS)
    env_py = ENV_PY[env_kind].format(package=package, offline=_OFFLINE)
    (folder / "migrations" / "env.py").write_text(env_py)
    (folder / "migrations" / "script.py.mako").write_text(MAKO)
    for name, (rev, down, upgrade, downgrade) in REVISIONS.items():
        write_revision(versions, name, rev, down, upgrade, downgrade)
    location = f"{package}:migrations" if package_location else "%(here)s/migrations"
    ini = folder / "alembic.ini"
    ini.write_text(INI.format(script_location=location))
    project.setenv("PYTHONPATH", f"{ROOT}:{apps}")
    project.monkeypatch.syspath_prepend(str(apps))
    project.setenv("INVOKE_MIGRATIONS_METADATA", f"{package}.models:Base.metadata")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(ini))
    return Shop(package, folder, ini, versions)


def revision_files(shop: Shop) -> set[str]:
    return {path.name for path in shop.versions.glob("*.py")}
