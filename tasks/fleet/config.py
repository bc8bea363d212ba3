"""A fleet's configuration (`migrations.fleets.<name>`), validated: a typo in a key or a
duration is one line naming it, before any target is discovered or touched."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from tasks.core.errors import ConfigError, UsageError
from tasks.core.settings import Settings

FLEET_KEYS = frozenset(
    {
        "urls",
        "urls_file",
        "query",
        "schemas",
        "protected",
        "postgres_lock_timeout",
        "postgres_statement_timeout",
    }
)
QUERY_KEYS = frozenset({"url_variable", "sql"})
SCHEMAS_KEYS = frozenset({"url_variable", "like"})
DEFAULT_PARALLEL = 4


@dataclass(frozen=True)
class FleetConfig:
    """`migrations.fleets.<name>`, validated."""

    name: str
    urls: tuple[str, ...] = ()
    urls_file: Path | None = None
    query: Mapping[str, str] | None = None
    schemas: Mapping[str, str] | None = None
    protected: bool = False
    postgres_lock_timeout: str | None = "5s"
    postgres_statement_timeout: str | None = "30min"


def fleet_config(settings: Settings, name: str | None) -> FleetConfig:
    """The named fleet, or the only one; unknown keys are errors (a typo must not drop targets)."""
    fleets = settings.extra.get("fleets") or {}
    if not isinstance(fleets, Mapping):
        raise ConfigError("migrations.fleets must be a mapping of fleet names")
    if not fleets:
        raise ConfigError("no fleet is configured (migrations.fleets.<name>, see the README)")
    if not name:
        if len(fleets) > 1:
            raise UsageError(f"several fleets are configured, choose one: --fleet {_names(fleets)}")
        name = next(iter(fleets))
    if name not in fleets:
        raise UsageError(f"unknown fleet {name!r} (configured: {_names(fleets)})")
    return _parse_fleet(name, fleets[name])


def _parse_fleet(name: str, raw: Any) -> FleetConfig:
    key = f"migrations.fleets.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key} must be a mapping")
    _known_keys(raw, FLEET_KEYS, key)
    sources = [source for source in ("urls", "urls_file", "query", "schemas") if raw.get(source)]
    if not sources:
        raise ConfigError(f"{key} needs one of urls, urls_file, query or schemas")
    urls = raw.get("urls") or ()
    if isinstance(urls, str):
        urls = [item for item in urls.split(",") if item.strip()]
    if not isinstance(urls, list | tuple):
        raise ConfigError(f"{key}.urls must be a list")
    query = _section(raw.get("query"), QUERY_KEYS, f"{key}.query")
    schemas = _section(raw.get("schemas"), SCHEMAS_KEYS, f"{key}.schemas")
    from tasks.core.settings import parse_flag

    return FleetConfig(
        name=name,
        urls=tuple(str(item).strip() for item in urls),
        urls_file=Path(str(raw["urls_file"])) if raw.get("urls_file") else None,
        query=query,
        schemas=schemas,
        protected=parse_flag(raw.get("protected", "false"), f"fleets.{name}.protected"),
        postgres_lock_timeout=_duration(raw.get("postgres_lock_timeout", "5s"), name, "lock"),
        postgres_statement_timeout=_duration(
            raw.get("postgres_statement_timeout", "30min"), name, "statement"
        ),
    )


# PostgreSQL's duration syntax for lock_timeout and statement_timeout: "5s", "30min", "500".
_DURATION = re.compile(r"^\d+(\.\d+)?\s*(us|ms|s|min|h|d)?$")


def _duration(value: Any, fleet: str, kind: str) -> str | None:
    """A PostgreSQL timeout, checked here: a bad one would fail every target, one by one."""
    text = str(value).strip() if value not in (None, False) else ""
    if text and not _DURATION.match(text):
        raise ConfigError(
            f"migrations.fleets.{fleet}.postgres_{kind}_timeout {text[:40]!r} is not a duration "
            "(e.g. 5s, 500ms, 30min)"
        )
    return text or None


def _section(raw: Any, keys: frozenset[str], key: str) -> Mapping[str, str] | None:
    if not raw:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key} must be a mapping with {', '.join(sorted(keys))}")
    _known_keys(raw, keys, key)
    missing = sorted(name for name in keys if not str(raw.get(name) or "").strip())
    if missing:
        raise ConfigError(f"{key} needs {', '.join(missing)}")
    return {name: str(raw[name]).strip() for name in keys}


def _known_keys(raw: Mapping[str, Any], known: frozenset[str], key: str) -> None:
    for name in raw:
        if name not in known:
            close = get_close_matches(str(name), sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {key}.{name}{hint}")


def _names(fleets: Mapping[str, Any]) -> str:
    return ", ".join(sorted(str(name) for name in fleets))
