"""The guarantees that hold whoever wrote the env.py a task runs.

A team's env.py calls `context.configure(...)` with its own options and never the tasks'
helpers. Every guarantee that used to depend on the project's own env.py is applied here, to the
options of whatever env.py runs under a task (the hook is `alembic_internals.on_configure`):

- the connection it migrates must reach the task's database (server and database identity,
  asked of the server); otherwise exit 2 naming env.py and both databases, before anything ran;
- each revision in its own transaction, unless env.py says otherwise;
- `on_version_apply` reports each applied revision to the task, so a failure blames the revision
  that failed and the residue report covers only what that revision left;
- one comparison configuration: env.py's options where it passes them, `migrations.compare`
  otherwise, the tasks' own tables always left out, ignore rules and dialect false positives
  applied;
- autogenerate: after env.py's own `process_revision_directives`, the tasks' tables are dropped
  from the operations and a revision with nothing in it is not written.

A plain `alembic` command carries no handover and is left exactly as its env.py configures it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tasks.core.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from tasks.core.handover import EnvHandover

# Marks the tasks' own wrappers, so an option is never wrapped twice.
_OURS = "__tasks_env_guard__"


def install() -> None:
    """Guard every env.py a task runs from now on (idempotent, process-wide)."""
    from tasks.core.alembic_internals import on_configure

    on_configure(guard_options)


def guard_options(environment_context: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options an env.py passed to `context.configure`, with the tasks' guarantees added."""
    handover: EnvHandover | None = environment_context.config.attributes.get("handover")
    if handover is None:
        return options
    options = dict(options)
    offline = bool(options.get("as_sql")) or environment_context.is_offline_mode()
    connection = options.get("connection")
    if connection is not None and not offline:
        require_task_database(environment_context, handover, connection)
        if handover.on_migration_connection is not None:
            handover.on_migration_connection(connection)
    options.setdefault("transaction_per_migration", True)
    options.update(_comparison(handover, options))
    _add_version_callback(handover, options)
    options["process_revision_directives"] = _after_env_hook(
        handover, options.get("process_revision_directives")
    )
    return options


# --- the database env.py migrates -----------------------------------------------------------


def require_task_database(
    environment_context: Any, handover: EnvHandover, connection: Connection
) -> None:
    """Refuse an env.py whose connection reaches another database than the task's.

    Runs inside `context.configure`, before env.py runs a single migration statement. A
    connection of env.py's own to the task's database is accepted (the `alembic init`
    env.py's `engine_from_config` on `sqlalchemy.url`) and gets the environment's timeouts.
    """
    from tasks.core.database_identity import identity, same_database

    ours = handover.connection
    if ours is connection:
        return
    try:
        if handover.database_identity is not None:
            same = identity(connection) == handover.database_identity
        elif ours is not None:
            same = same_database(connection, ours)
        else:
            same = _same_as_environment(handover, connection)
    except Exception as error:
        raise ConfigError(
            f"{_env_py(environment_context)} hands Alembic a connection the tasks cannot "
            f"identify ({_first_line(error)}); use config.attributes['connection']"
        ) from None
    if not same:
        theirs = connection.engine.url.render_as_string(hide_password=True)
        raise ConfigError(
            f"{_env_py(environment_context)} migrates {theirs}, not the task's "
            f"{handover.environment.name} database {handover.environment.masked_url}: "
            "it must use config.attributes['connection'] (README: Adopting an existing "
            "Alembic project); nothing was changed"
        )
    from tasks.core.engines import make_sqlite_connection_transactional

    make_sqlite_connection_transactional(connection)
    if handover.settings is not None and not connection.in_transaction():
        from tasks.core.session import apply_session_timeouts

        apply_session_timeouts(connection, handover.settings, handover.environment)


def _same_as_environment(handover: EnvHandover, connection: Connection) -> bool:
    from tasks.core.database_identity import same_database
    from tasks.core.engines import connect

    with connect(handover.environment, handover.connect_timeout) as ours:
        return same_database(connection, ours)


def _env_py(environment_context: Any) -> str:
    from pathlib import Path

    try:
        path = Path(environment_context.script.env_py_location).resolve()
    except Exception:
        return "env.py"
    from tasks.core.settings import PROJECT_ROOT

    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _first_line(error: BaseException) -> str:
    from tasks.core.redaction import redact

    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return redact(lines[0] if lines else type(error).__name__)


# --- what is compared -------------------------------------------------------------------------


def _comparison(handover: EnvHandover, options: dict[str, Any]) -> dict[str, Any]:
    """env.py's comparison options where it passed them, `migrations.compare` for the rest,
    each wrapped in the tasks' rules (own tables out, ignore rules, dialect false positives);
    with `compare.from_env: false`, `migrations.compare` alone."""
    from tasks.core.alembic_internals import guard_user_default_comparison
    from tasks.core.comparison import from_settings, merge_env_options
    from tasks.core.custom_types import with_custom_type_imports

    guard_user_default_comparison()
    project = from_settings(handover.settings)
    rules = merge_env_options(project, options) if project.from_env else project
    compared = rules.options(handover.environment.dialect)
    compared.setdefault("render_item", None)
    compared["render_item"] = with_custom_type_imports(compared["render_item"])
    return compared


# --- applied revisions ------------------------------------------------------------------------


def _add_version_callback(handover: EnvHandover, options: dict[str, Any]) -> None:
    callback = handover.on_revision_applied
    if callback is None:
        return
    existing = options.get("on_version_apply") or ()
    hooks = list(existing) if isinstance(existing, list | tuple) else [existing]
    if any(getattr(hook, _OURS, False) for hook in hooks):
        return
    options["on_version_apply"] = [*hooks, _version_hook(callback)]


def _version_hook(callback: Callable[[str, str, bool, Any], None]) -> Callable[..., None]:
    def on_version_apply(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        # Upgrade or downgrade, the revision a step applies or reverts is its "up" revision.
        script = step.up_revision
        doc = (script.doc if script else "") or ""
        # The connection env.py migrates on (its own engine's, when it built one): bookkeeping
        # inside the revision's transaction must go through it, not a second connection.
        callback(step.up_revision_id, doc, step.is_upgrade, ctx.connection)

    setattr(on_version_apply, _OURS, True)
    return on_version_apply


# --- autogenerate -----------------------------------------------------------------------------


def _after_env_hook(
    handover: EnvHandover, env_hook: Callable[..., None] | None
) -> Callable[..., None]:
    """env.py's `process_revision_directives` (if any), then the tasks': their own tables out
    of the operations, the ignore rules, and no file for a revision with nothing in it."""
    if getattr(env_hook, _OURS, False):
        return env_hook  # type: ignore[return-value]

    def process_revision_directives(context: Any, revision: Any, directives: list[Any]) -> None:
        if env_hook is not None:
            env_hook(context, revision, directives)
        from tasks.core.comparison import filter_revision, from_settings, without_tool_tables

        without_tool_tables(directives)
        filter_revision(directives, from_settings(handover.settings))
        handover.revision_directives.extend(directives)
        if handover.write_empty_revision:
            return
        if all(_empty(script) for script in directives):
            directives[:] = []

    setattr(process_revision_directives, _OURS, True)
    return process_revision_directives


def _empty(script: Any) -> bool:
    upgrades = getattr(script, "upgrade_ops_list", None)
    if upgrades is None:
        return False
    return all(ops.is_empty() for ops in upgrades)
