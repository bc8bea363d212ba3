"""The fleets' databases as the scope check sees them (tasks.core.environments.check_scope).

A database that is only a fleet's target (no `DATABASE_URL_PRODUCTION` names it) is still a
shared, perhaps protected, database: `local.reset` must not rebuild it and `dev.downgrade` must
not take a protected fleet's target to base. The fleet layer reads fleets strictly when it runs
one; here they are read leniently and without connecting (the check runs before anything
connects): every URL written in `urls` (`${VAR}` expanded from the process environment, then
`.env.<fleet>` and `.env`), every line of `urls_file`, and the database named by
`schemas.url_variable`. A value nothing can be read of counts as any database (fail closed).

Not covered: the targets a `query` fleet reads from its catalog database at run time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.core.settings import Settings

# How a `.env` file is read (tasks.core.environments.read_dotenv, handed in: no import cycle).
DotenvReader = Callable[[Path], dict[str, str]]

_VARIABLE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclass(frozen=True)
class FleetDatabase:
    """One database value a fleet names: its text (None: nothing can be known of it, so it may
    be any database), where it was written, and its fleet's guard level."""

    fleet: str
    value: str | None
    where: str
    protected: bool

    @property
    def level(self) -> int:
        """As tasks.core.environments guard levels: 1 shared, 2 protected."""
        return 2 if self.protected else 1


def fleet_databases(
    settings: Settings, environ: Mapping[str, str], read_dotenv: DotenvReader
) -> list[FleetDatabase]:
    """Every database the configured fleets name, without connecting anywhere."""
    fleets = settings.extra.get("fleets") or {}
    if not isinstance(fleets, Mapping):
        return []
    found: list[FleetDatabase] = []
    for name in sorted(fleets, key=str):
        raw = fleets[name]
        if isinstance(raw, Mapping):
            found.extend(_databases_of_fleet(settings, str(name), raw, environ, read_dotenv))
    return found


def _protected(raw: Mapping[str, Any], name: str) -> bool:
    """The fleet's `protected`; a value the fleet commands would refuse counts as protected."""
    from tasks.core.errors import ConfigError
    from tasks.core.settings import parse_flag

    try:
        return parse_flag(raw.get("protected", "false"), f"fleets.{name}.protected")
    except ConfigError:
        return True


def _databases_of_fleet(
    settings: Settings,
    name: str,
    raw: Mapping[str, Any],
    environ: Mapping[str, str],
    read_dotenv: DotenvReader,
) -> list[FleetDatabase]:
    protected = _protected(raw, name)
    values: list[tuple[str | None, str]] = []
    urls = raw.get("urls") or ()
    if isinstance(urls, str):
        urls = urls.split(",")
    if isinstance(urls, list | tuple):
        for index, item in enumerate(urls):
            text = str(item).strip()
            if text:
                values.append(
                    (_expand(settings, name, text, environ, read_dotenv), f"urls[{index}]")
                )
    if raw.get("urls_file"):
        path = Path(str(raw["urls_file"]))
        values.extend(_file_values(settings, name, path, environ, read_dotenv))
    schemas = raw.get("schemas")
    if isinstance(schemas, Mapping) and schemas.get("url_variable"):
        variable = str(schemas["url_variable"])
        values.append(
            (_variable(settings, name, variable, environ, read_dotenv), f"schemas ({variable})")
        )
    # An unset variable names no database at all: never a match.
    return [FleetDatabase(name, value, where, protected) for value, where in values if value != ""]


def _file_values(
    settings: Settings,
    name: str,
    path: Path,
    environ: Mapping[str, str],
    read_dotenv: DotenvReader,
) -> list[tuple[str | None, str]]:
    """The file's URLs; a file that cannot be read may name any database."""
    try:
        lines = settings.path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return [(None, f"urls_file {path}")]
    values: list[tuple[str | None, str]] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            values.append(
                (_expand(settings, name, text, environ, read_dotenv), f"{path.name}:{number}")
            )
    return values


def _expand(
    settings: Settings,
    name: str,
    text: str,
    environ: Mapping[str, str],
    read_dotenv: DotenvReader,
) -> str | None:
    match = _VARIABLE.match(text)
    return _variable(settings, name, match.group(1), environ, read_dotenv) if match else text


def _variable(
    settings: Settings,
    name: str,
    variable: str,
    environ: Mapping[str, str],
    read_dotenv: DotenvReader,
) -> str | None:
    """As the fleet reads it: the process environment, then `.env.<fleet>` and `.env`. Unset
    is "" (no database); a file that cannot be parsed is None (any database)."""
    from tasks.core.errors import ConfigError

    if environ.get(variable):
        return environ[variable]
    for filename in (f".env.{name}", ".env"):
        try:
            value = read_dotenv(settings.dotenv_dir / filename).get(variable)
        except ConfigError:
            return None
        if value:
            return value
    return ""
