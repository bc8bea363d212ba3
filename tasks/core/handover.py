"""What a task hands to env.py: its environment, its connection, its metadata and the hooks
through which env.py reports back (applied revisions, autogenerate's directives).

Stored as `config.attributes["handover"]` by `tasks.core.alembic_config.alembic_config`; read
by the project's env.py and, for any env.py, by `tasks.core.adopted_env`. A module of its own
so that what reads it need not import the Config builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Connection

    from tasks.core.environments import Environment
    from tasks.core.settings import Settings


@dataclass
class EnvHandover:
    """What a task passes to env.py, stored as `config.attributes["handover"]`."""

    environment: Environment
    metadata_path: str
    connection: Connection | None = None
    metadata: MetaData | None = None
    # Called once per applied revision with (revision id, message, up/down, the connection it
    # ran on: env.py's own when it built one, so bookkeeping joins the revision's transaction).
    on_revision_applied: Callable[[str, str, bool, Any], None] | None = None
    # Called with the connection an env.py hands Alembic (its own, when it built one) before any
    # revision runs: the statement guard of a protected upgrade attaches there.
    on_migration_connection: Callable[[Any], None] | None = None
    # Autogenerate results are collected here instead of only being written to a file.
    revision_directives: list[Any] = field(default_factory=list)
    write_empty_revision: bool = True
    connect_timeout: float = 5
    # The task's database as `database_identity.identity` names it, read in advance where the
    # task's connection cannot be asked from env.py's thread (an async driver's connection
    # belongs to its own event loop; an env.py in a worker thread runs on another one).
    database_identity: tuple[Any, ...] | None = None
    # The run's settings (`migrations.compare` for the comparison options); set by alembic_config.
    settings: Settings | None = None
