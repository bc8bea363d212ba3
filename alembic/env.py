"""Alembic's environment, shared by the invoke tasks and plain `alembic` commands.

Tasks hand over their connection, environment and models through `config.attributes`; a plain
`alembic current` resolves them here from ENVIRONMENT and the DATABASE_URL_* variables, the same
way the tasks do (see `tasks/core/environments.py`). Always a synchronous engine.
"""

from __future__ import annotations

import dataclasses
import sys
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from alembic.util import CommandError

# alembic.ini's `prepend_sys_path = .` is the shell's directory: `alembic -c <repo>/alembic.ini`
# run from anywhere else would not find `tasks`. The project is the folder above this one.
if (_project := str(Path(__file__).resolve().parent.parent)) not in sys.path:
    sys.path.insert(0, _project)

# Registers `op.drop_invalid_index`, which lock-safe revisions call (tasks/migrate/safe_ops.py),
# and `op.backfill` (tasks/online/backfill.py).
from tasks.core.alembic_config import context_options
from tasks.core.engines import connect
from tasks.core.environments import environment_for_alembic, resolve_environment
from tasks.core.errors import MigrationsError
from tasks.core.handover import EnvHandover
from tasks.core.metadata import load_metadata
from tasks.core.session import enter_schema
from tasks.core.settings import load_project_settings
from tasks.migrate import safe_ops  # noqa: F401
from tasks.online import backfill, lock_retries  # noqa: F401

config = context.config
handover: EnvHandover | None = config.attributes.get("handover")

if handover is None and config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _from_handover_or_environment() -> EnvHandover:
    """The task's handover, or one built from ENVIRONMENT for plain `alembic` commands."""
    if handover is not None:
        return handover
    try:
        settings = load_project_settings()
        name = environment_for_alembic(settings)
        environment = resolve_environment(settings, name)
        # Schema-per-tenant, as in Alembic's cookbook: `alembic -x schema=tenant_1 upgrade head`.
        schema = context.get_x_argument(as_dictionary=True).get("schema")
        if schema:
            environment = dataclasses.replace(environment, schema=schema)
        return EnvHandover(
            environment=environment,
            metadata_path=settings.metadata,
            connect_timeout=settings.connect_timeout,
            settings=settings,
        )
    except MigrationsError as error:
        raise CommandError(str(error)) from None


def _metadata(target: EnvHandover):  # type: ignore[no-untyped-def]
    if target.metadata is None:
        try:
            target.metadata = load_metadata(target.metadata_path)
        except MigrationsError as error:
            raise CommandError(str(error)) from None
    return target.metadata


def _safe_revisions(options: dict) -> dict:
    """On PostgreSQL, autogenerate writes lock-safe revisions (tasks/migrate/safe_revisions.py).

    The task says whether `migrations.safe_revisions` is on through `config.attributes`; a
    plain `alembic revision --autogenerate` reads the same setting, only when it writes one.
    """
    then = options["process_revision_directives"]

    def process_revision_directives(context, revision, directives) -> None:  # type: ignore[no-untyped-def]
        from tasks.migrate import safe_revisions

        is_enabled = config.attributes.get("safe_revisions")
        if is_enabled is None:
            try:
                is_enabled = safe_revisions.enabled(load_project_settings().extra)
            except MigrationsError as error:
                raise CommandError(str(error)) from None
        if safe_revisions.applies_to(context.dialect.name, is_enabled):
            safe_revisions.process_revision_directives(context, revision, directives)
        then(context, revision, directives)

    return {**options, "process_revision_directives": process_revision_directives}


def _session_timeouts(connection, target: EnvHandover) -> None:  # type: ignore[no-untyped-def]
    """Plain `alembic` on PostgreSQL runs under the environment's lock_timeout and
    statement_timeout too, as the tasks' sessions do. Set for the session, they also bound
    every step of a revision's `autocommit_block()` (CREATE INDEX CONCURRENTLY, VALIDATE)."""
    if target.environment.dialect != "postgresql":
        return
    from tasks.core.session import apply_session_timeouts

    try:
        apply_session_timeouts(
            connection, target.settings or load_project_settings(), target.environment
        )
    except MigrationsError as error:
        raise CommandError(str(error)) from None


def run_migrations_offline() -> None:
    """Emit SQL for the environment's dialect without connecting."""
    target = _from_handover_or_environment()
    context.configure(
        url=target.environment.url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **context_options(_metadata(target), target.environment.dialect, target),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run on the task's connection, or on one opened here for plain `alembic` commands."""
    target = _from_handover_or_environment()
    options = context_options(_metadata(target), target.environment.dialect, target)
    options = _safe_revisions(options)
    # A caller following Alembic's cookbook ("Sharing a Connection") passes its connection here.
    shared = target.connection or config.attributes.get("connection")
    if shared is not None:
        context.configure(connection=shared, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    try:
        with connect(target.environment, target.connect_timeout) as connection:
            _session_timeouts(connection, target)
            if target.environment.schema:
                enter_schema(connection, target.environment.schema)
            context.configure(connection=connection, **options)
            with context.begin_transaction():
                context.run_migrations()
    except MigrationsError as error:
        raise CommandError(str(error)) from None


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
