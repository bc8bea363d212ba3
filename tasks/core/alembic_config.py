"""What the tasks and `alembic/env.py` share: the Alembic Config, context options, filters.

The tasks hand `env.py` everything through `Config.attributes` (connection, environment,
metadata, hooks), so a task never opens a second engine and never consults ENVIRONMENT. Plain
`alembic` commands arrive with empty attributes and `env.py` resolves the same things itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, cast

from tasks.core.comparison import TOOL_TABLES, from_settings
from tasks.core.custom_types import with_custom_type_imports
from tasks.core.errors import ConfigError
from tasks.core.handover import EnvHandover

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import MetaData

    from tasks.core.settings import Settings


class TextSink(Protocol):
    """Where Alembic's printed output goes: anything with `write` (a StringIO, the console)."""

    def write(self, text: str, /) -> int: ...


def alembic_config(
    settings: Settings,
    handover: EnvHandover | None = None,
    *,
    stdout: TextSink | None = None,
    sql_output: TextSink | None = None,
) -> Config:
    """The Alembic Config of `migrations.alembic_ini`, its paths resolved and checked.

    With a handover, the config also carries what third-party env.py files read, following
    Alembic's documented patterns: the task's live connection in `attributes["connection"]`
    (cookbook "Sharing a Connection") and the real URL in `sqlalchemy.url` (the default
    `alembic init` env.py's `engine_from_config`). A bad ini is a ConfigError naming the key.
    """
    # Alembic annotates both streams as TextIO but only calls `write` on them (and reads
    # `encoding` with getattr), so any TextSink serves; the casts say so to the type checker.
    config = _task_config_class()(
        str(settings.alembic_ini),
        stdout=cast("TextIO", stdout if stdout is not None else sys.stdout),
        output_buffer=cast("TextIO | None", sql_output),
        cmd_opts=argparse.Namespace(quiet=True),
    )
    _read_ini(config, settings)
    try:
        _resolve_locations(config, settings)
    except ValueError as error:  # Alembic's own reading of a bad path_separator, for one
        raise ConfigError(f"migrations.alembic_ini {settings.alembic_ini.name}: {error}") from None
    if handover is not None:
        from tasks.core import adopted_env

        adopted_env.install()  # whatever env.py runs, the task's guarantees hold
        if handover.settings is None:
            handover.settings = settings
        config.attributes["handover"] = handover
        if handover.connection is not None:
            config.attributes["connection"] = handover.connection
        # The application's own async driver when `migrations.driver` keeps it.
        chosen = handover.environment.migration_url or handover.environment.url
        url = chosen.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _read_ini(config: Config, settings: Settings) -> None:
    """Parse the ini now, so a missing or malformed file is one line, not a traceback later."""
    import configparser

    ini = settings.alembic_ini
    if not ini.is_file():
        raise ConfigError(f"migrations.alembic_ini {str(ini)!r} does not exist")
    try:
        config.file_config  # noqa: B018 - parsed on first access, memoized by Alembic
        config.get_main_option("script_location")
    except (configparser.Error, UnicodeDecodeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"migrations.alembic_ini {ini.name}: cannot parse: {first}") from None


def _resolve_locations(config: Config, settings: Settings) -> None:
    """script_location and version_locations: the overrides first, then the ini's own values.

    Alembic resolves a relative path against the shell's directory; a team's ini was written
    to be run next to it, so a relative value that does not exist there is taken relative to
    the ini. Anything that still does not exist is a ConfigError naming the key to fix.
    """
    ini_dir = settings.alembic_ini.resolve().parent
    override = str(settings.extra.get("script_location") or "").strip()
    if override:
        location = _project_location(settings, override)
        key = "migrations.script_location"
    else:
        location = config.get_main_option("script_location") or str(settings.root / "alembic")
        key = f"script_location in {settings.alembic_ini.name}"
    config.set_main_option("script_location", _existing(location, ini_dir, key).replace("%", "%%"))
    versions = _names_of(settings.extra.get("version_locations"))
    if versions:
        resolved = [
            str(
                _existing(
                    _project_location(settings, item), ini_dir, "migrations.version_locations"
                )
            )
            for item in versions
        ]
    else:
        resolved = [
            _existing(item, ini_dir, f"version_locations in {settings.alembic_ini.name}")
            for item in _rejoined_resources(config.get_version_locations_list() or [])
        ]
    if resolved:
        if config.get_main_option("path_separator") is None:
            config.set_main_option("path_separator", "os")
        config.set_main_option("version_locations", os.pathsep.join(resolved).replace("%", "%%"))


def is_package_resource(location: str) -> bool:
    """Alembic's `package:folder` form (`myapp:migrations`), not a path (`C:\\x`, `./a:b`)."""
    import re

    return bool(re.fullmatch(r"[A-Za-z_][\w.]*:[\w.][\w./-]*", location))


def _project_location(settings: Settings, location: str) -> str:
    """A `migrations.*` location: relative to the project, or a `package:folder` as it is."""
    if is_package_resource(location) and not settings.path(location).exists():
        return location
    return str(settings.path(location))


def _rejoined_resources(items: list[str]) -> list[str]:
    """`path_separator = os` splits `myapp:versions` at its colon on POSIX: two neighbours
    that are not folders but form a package resource are one location again."""
    joined: list[str] = []
    index = 0
    while index < len(items):
        item = items[index]
        if index + 1 < len(items) and not Path(item).exists():
            candidate = f"{item}:{items[index + 1]}"
            if is_package_resource(candidate) and _resource_folder(candidate) is not None:
                joined.append(candidate)
                index += 2
                continue
        joined.append(item)
        index += 1
    return joined


def _resource_folder(location: str) -> Path | None:
    try:
        path = _resource_path(location)
    except Exception:
        return None
    return path if path.is_dir() else None


def _resource_path(location: str) -> Path:
    """The folder a `package:folder` location names, found without running the package.

    Alembic's `coerce_resource_to_filename` imports the package to ask it for its files: for an
    application such as Prefect that is seconds of imports on every command, `current`
    included, only to learn a folder's path. The import system's finder says where an
    installed top-level package lives without executing it; a dotted package, a package in a
    zip file or a folder the finder does not show go to Alembic's own lookup.
    """
    import importlib.util

    from alembic.util import coerce_resource_to_filename

    package, *parts = location.split(":")  # Alembic's split: every colon joins a path part
    if "." not in package and package not in sys.modules:
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(root).joinpath(*parts)
            if candidate.is_dir():
                return candidate
    return Path(coerce_resource_to_filename(location))


def _existing(location: str, ini_dir: Path, key: str) -> str:
    """`location` as a path that exists: as given, package resource, or relative to the ini."""
    candidates: list[Path] = []
    if ":" in location and not Path(location).is_absolute():
        with contextlib.suppress(Exception):  # "package:folder", Alembic's resource form
            candidates.append(_resource_path(location))
    path = Path(location).expanduser()
    candidates.append(path)
    if not path.is_absolute():
        candidates.append(ini_dir / path)
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    raise ConfigError(f"{key}: {location!r} is not a folder (relative paths: to the ini file)")


def _names_of(value: Any) -> list[str]:
    """A list from YAML, or a comma-separated string from a variable."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError("migrations.version_locations must be a list or a comma-separated string")
    return [str(item).strip() for item in items if str(item).strip()]


@contextlib.contextmanager
def without_ini_logging() -> Iterator[None]:
    """While a task runs Alembic, an env.py's `fileConfig(config.config_file_name)` does nothing.

    The stock and most third-party env.py files call it unconditionally; it is meant for plain
    `alembic` commands, and under a task it would disable the tasks' loggers and print Alembic's
    INFO chatter on stderr, where a task promises one line.
    """
    import logging.config

    original = logging.config.fileConfig
    logging.config.fileConfig = lambda *_args, **_kwargs: None
    try:
        yield
    finally:
        logging.config.fileConfig = original


def _task_config_class() -> type[Config]:
    """Alembic's Config, except that `print_stdout` ignores `quiet`.

    `quiet` keeps Alembic's status chatter ("Generating ... done") off the real stdout, but
    Alembic's Config also drops everything `print_stdout` writes when quiet, which is the whole
    output of `history`, `heads` and `current`. The tasks route that output to `stdout` already.
    """
    from alembic import util
    from alembic.config import Config

    class TaskConfig(Config):
        def print_stdout(self, text: str, *arg: Any) -> None:
            output = str(text) % arg if arg else str(text)
            util.write_outstream(self.stdout, output, "\n")

    return TaskConfig


def include_name(name: str | None, type_: str, _parent_names: dict[str, Any]) -> bool:
    """Leave the tool's own tables out of every comparison."""
    return not (type_ == "table" and name in TOOL_TABLES)


def comparison_options(
    settings: Settings | None = None, dialect: str | None = None
) -> dict[str, Any]:
    """Options under which models and databases are compared, for autogenerate and checks:
    `migrations.compare` and the known dialect false positives (`tasks.core.comparison`)."""
    from tasks.core.alembic_internals import guard_user_default_comparison

    guard_user_default_comparison()
    return from_settings(settings).options(dialect)


def context_options(
    metadata: MetaData, dialect: str, handover: EnvHandover | None = None
) -> dict[str, Any]:
    """Everything the project's env.py passes to `context.configure` besides the connection.

    Under a task, `tasks.core.adopted_env` adds the rest to whatever env.py passes (applied
    revisions reported, the tasks' tables left out of autogenerate, no empty revision), so an
    adopted env.py gets the same; plain `alembic` commands get these options alone.
    """
    options: dict[str, Any] = {
        "target_metadata": metadata,
        "render_as_batch": dialect == "sqlite",
        # Each revision commits on its own: a failing one leaves the database at the last good one.
        "transaction_per_migration": True,
        "process_revision_directives": _revision_hook(handover),
        **comparison_options(handover.settings if handover is not None else None, dialect),
    }
    options["render_item"] = with_custom_type_imports(options.get("render_item"))
    if handover is not None and handover.environment.schema:
        options["version_table_schema"] = handover.environment.schema
    return options


def _revision_hook(_handover: EnvHandover | None) -> Callable[..., None]:
    """The project's env.py hook; under a task `adopted_env` runs the tasks' part after it."""

    def process_revision_directives(context: Any, revision: Any, directives: list[Any]) -> None:
        return None

    return process_revision_directives
