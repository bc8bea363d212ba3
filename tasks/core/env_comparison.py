"""The comparison one run compares under: `migrations.compare`, and for an adopted env.py the
options that env.py passes to `context.configure`.

Kept apart from `tasks.core.comparison` (pure rules, no Alembic) because reading an env.py's
options means running it through Alembic with the task's Config (`tasks.core.alembic_config`),
which itself builds on the comparison rules.
"""

from __future__ import annotations

import configparser
import importlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.alembic_config import alembic_config
from tasks.core.async_driver import in_worker_thread
from tasks.core.comparison import Comparison, from_settings, merge_env_options
from tasks.core.engines import describe_database_error
from tasks.core.errors import ConfigError
from tasks.core.handover import EnvHandover

if TYPE_CHECKING:
    from tasks.core.settings import Settings


def for_session(session: Any, connection: Any = None) -> Comparison:
    """The comparison configuration of one task run (`tasks.core.session.Session`).

    `migrations.compare`, overridden by what an adopted env.py passes to `context.configure`
    (read by running it on `connection`, as `alembic check` would) unless
    `migrations.compare.from_env` is false. The project's own env.py takes its options from
    `migrations.compare` already, so it is not run for them.
    """
    comparison = from_settings(session.settings)
    if connection is None or not comparison.from_env or not adopted_env_py(session.settings):
        return comparison
    return merge_env_options(comparison, options_from_env(session, connection))


def adopted_env_py(settings: Settings) -> bool:
    """Whether the scripts' env.py is someone else's (an adopted Alembic project).

    Read from the ini with configparser, not Alembic: an everyday `local.sync --check` does
    not import Alembic. Anything unreadable counts as adopted (env.py is then run, and its
    own error is reported).
    """
    override = getattr(settings, "script_location", None) or settings.extra.get("script_location")
    location = str(override or "").strip()  # migrations.script_location, where it exists
    if not location:
        parser = configparser.ConfigParser(defaults={"here": str(settings.alembic_ini.parent)})
        try:
            parser.read(settings.alembic_ini, encoding="utf-8")
            location = parser.get("alembic", "script_location", fallback="").strip()
        except (configparser.Error, OSError, UnicodeDecodeError):
            return True
    own = settings.root / "alembic" / "env.py"
    try:
        env_py = (_script_path(location, settings) if location else own.parent) / "env.py"
        return env_py.resolve() != own.resolve()
    except Exception:
        return True


def _script_path(location: str, settings: Settings) -> Any:
    if ":" in location and not Path(location).exists():  # a package resource: "myapp:alembic"
        package, _, folder = location.partition(":")
        module = importlib.import_module(package)
        return Path(next(iter(module.__path__))) / folder
    return settings.path(location)


def options_from_env(session: Any, connection: Any) -> dict[str, Any]:
    """The options env.py passes to `context.configure`, captured the way `alembic check`
    runs env.py: with a migration function that only reads the configured context.

    Fails closed: an env.py that cannot be run this way is a configuration error naming it,
    never a comparison silently made under other rules.
    """
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    handover = EnvHandover(
        environment=session.environment,
        metadata_path=session.settings.metadata,
        connection=connection,
        metadata=session.metadata(),
        settings=session.settings,
    )
    config = alembic_config(session.settings, handover, stdout=io.StringIO())
    config.attributes.setdefault("connection", connection)  # Alembic's "Sharing a Connection"
    captured: dict[str, Any] = {}

    def read_options(_revision: Any, context: Any) -> list[Any]:
        captured.update(context.opts)
        return []

    try:
        script = ScriptDirectory.from_config(config)
        with EnvironmentContext(config, script, fn=read_options, dont_mutate=True):
            if session.environment.migration_url is None:
                script.run_env()
            else:  # an async application's env.py may run only in its loop's worker thread
                in_worker_thread(script.run_env)
    except Exception as error:
        raise ConfigError(
            "cannot read the comparison options of env.py "
            f"({describe_database_error(error)}); set migrations.compare.from_env to false "
            "to compare under migrations.compare alone"
        ) from None
    finally:
        if connection.in_transaction():
            connection.rollback()
    return captured
