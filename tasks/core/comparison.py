"""How models and a database are compared: one configuration for autogenerate, `check`, `sync`
and `ci.check`'s models check.

A team brings its own comparison rules: hooks that leave tables out (`include_object`,
`include_name`), custom renderers for its types (`render_item`, `user_module_prefix`), type and
default comparison switches or functions, several schemas. They come from `migrations.compare`
(import paths `module:attribute`) or, for an adopted `env.py`, from what that env.py passes to
`context.configure` (see `options_from_env`). If autogenerate, `check` and `sync` compared under
different rules, `check` would demand revisions that autogenerate then writes empty, and sync
would apply what the team's hooks exclude.

On top of that come two filters every comparison applies to its result:

- `ignore`: simple patterns `op:target` (`modify_default:*.created_at`, `add_index:ix_*_lower_*`),
  for differences a team has decided to live with;
- the known dialect false positives (`false_positive`): differences Alembic reports although the
  database holds exactly what the models describe, so a second `local.sync` says "in sync".

Pure Python: imports neither invoke nor, at module level, SQLAlchemy or Alembic.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from tasks.core.errors import ConfigError

if TYPE_CHECKING:
    from tasks.core.settings import Settings

# Alembic's diff names, grouped by what an ignore pattern's target is matched against.
COLUMN_OPS = frozenset(
    {
        "add_column",
        "remove_column",
        "modify_type",
        "modify_nullable",
        "modify_default",
        "modify_comment",
    }
)
TABLE_OPS = frozenset({"add_table", "remove_table", "add_table_comment", "remove_table_comment"})
OBJECT_OPS = frozenset(
    {"add_index", "remove_index", "add_constraint", "remove_constraint", "add_fk", "remove_fk"}
)
KNOWN_OPS = COLUMN_OPS | TABLE_OPS | OBJECT_OPS

# `migrations.compare` keys and what each holds.
HOOK_KEYS = ("include_object", "include_name", "render_item")
SWITCH_KEYS = ("compare_type", "compare_server_default")
KNOWN_KEYS = frozenset(
    {*HOOK_KEYS, *SWITCH_KEYS, "user_module_prefix", "include_schemas", "ignore", "from_env"}
)

# Dialects that have no IDENTITY columns: SQLAlchemy renders `Identity()` as a plain
# autoincrement key there, and the database has nothing an identity could be compared with.
NO_IDENTITY = frozenset({"sqlite", "mysql", "mariadb"})
MYSQL = frozenset({"mysql", "mariadb"})


@dataclass(frozen=True)
class IgnoreRule:
    """`op:target`, both shell-style patterns (`*`, `?`, `[...]`), case-sensitive.

    The target is `table.column` for column differences, the table name for table differences,
    and the object's name (or `table.name`) for indexes, unique constraints and foreign keys.
    """

    op: str
    target: str
    text: str

    def matches(self, op: str, table: str | None, name: str | None) -> bool:
        if not fnmatchcase(op, self.op):
            return False
        return any(fnmatchcase(candidate, self.target) for candidate in targets(op, table, name))


def targets(op: str, table: str | None, name: str | None) -> list[str]:
    """What an ignore pattern's target is matched against for one difference."""
    table = table or ""
    if op in TABLE_OPS:
        return [table]
    if op in COLUMN_OPS:
        return [f"{table}.{name or ''}"]
    return [name or "", f"{table}.{name or ''}"]


@dataclass(frozen=True)
class Comparison:
    """The comparison configuration, resolved: hooks are callables, ignore rules parsed."""

    compare_type: bool | Callable[..., Any] = True
    compare_server_default: bool | Callable[..., Any] = True
    include_object: Callable[..., Any] | None = None
    include_name: Callable[..., Any] | None = None
    render_item: Callable[..., Any] | None = None
    user_module_prefix: str | None = None
    include_schemas: bool = False
    ignore: tuple[IgnoreRule, ...] = ()
    from_env: bool = True

    @property
    def needs_alembic(self) -> bool:
        """Rules only Alembic's own comparison honours (sync's quick path does not model them)."""
        return bool(
            self.include_object
            or self.include_name
            or self.include_schemas
            or callable(self.compare_type)
            or callable(self.compare_server_default)
        )

    def ignored(self, op: str, table: str | None, name: str | None) -> bool:
        return any(rule.matches(op, table, name) for rule in self.ignore)

    def options(self, dialect: str | None = None) -> dict[str, Any]:
        """Alembic `context.configure` / `MigrationContext.configure` options for `dialect`.

        The false-positive comparators are installed only where a false positive is known
        (SQLite, MySQL, MariaDB): Alembic hands a user `compare_server_default` the reflected
        default unchecked and fails on PostgreSQL's identity columns
        (`'Identity' object has no attribute 'arg'`).
        """
        quirky = dialect in NO_IDENTITY
        options: dict[str, Any] = {
            "compare_type": (_type_comparator(self.compare_type) if quirky else self.compare_type),
            "compare_server_default": (
                _default_comparator(self.compare_server_default)
                if quirky
                else self.compare_server_default
            ),
            "include_name": _include_name(self.include_name),
            "include_object": _include_object(self.include_object, self),
        }
        if self.include_schemas:
            options["include_schemas"] = True
        if self.render_item is not None:
            options["render_item"] = self.render_item
        if self.user_module_prefix:
            options["user_module_prefix"] = self.user_module_prefix
        return options


# --- reading the configuration -------------------------------------------------------------


def from_settings(settings: Settings | None) -> Comparison:
    """`migrations.compare`, validated: a typo must fail loudly, not compare differently."""
    if settings is None:
        return Comparison()
    raw = settings.extra.get("compare") or {}
    if not isinstance(raw, Mapping):
        raise ConfigError("migrations.compare must be a mapping")
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"migrations.compare.{unknown[0]} is not a known key "
            f"(known: {', '.join(sorted(KNOWN_KEYS))})"
        )
    hooks = {key: _hook(raw.get(key), f"compare.{key}") for key in HOOK_KEYS}
    switches = {key: _switch(raw.get(key, True), f"compare.{key}") for key in SWITCH_KEYS}
    prefix = raw.get("user_module_prefix")
    return Comparison(
        **switches,
        **hooks,
        user_module_prefix=str(prefix).strip() or None if prefix else None,
        include_schemas=_flag(raw.get("include_schemas", False), "compare.include_schemas"),
        ignore=parse_ignore(raw.get("ignore")),
        from_env=_flag(raw.get("from_env", True), "compare.from_env"),
    )


def parse_ignore(value: Any) -> tuple[IgnoreRule, ...]:
    """`op:target` patterns from a list or a comma-separated string (environment variables)."""
    if value in (None, ""):
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError("migrations.compare.ignore must be a list or a comma-separated string")
    rules = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        op, separator, target = text.partition(":")
        op, target = op.strip(), target.strip()
        if not separator or not op or not target:
            raise ConfigError(
                f"migrations.compare.ignore: {text!r} must look like 'op:target', "
                "for example 'modify_default:*.created_at'"
            )
        if not any(fnmatchcase(known, op) for known in KNOWN_OPS):
            raise ConfigError(
                f"migrations.compare.ignore: {op!r} in {text!r} matches no difference "
                f"(known: {', '.join(sorted(KNOWN_OPS))})"
            )
        rules.append(IgnoreRule(op, target, text))
    return tuple(rules)


def _hook(value: Any, key: str) -> Callable[..., Any] | None:
    if value in (None, "", False):
        return None
    if callable(value):
        return value
    return import_callable(str(value), key)


def _switch(value: Any, key: str) -> bool | Callable[..., Any]:
    """true / false, or the import path of a function Alembic calls (a comparator)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in {"true", "yes", "1", "false", "no", "0"}:
        return text.lower() in {"true", "yes", "1"}
    return import_callable(text, key)


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "yes", "1", "false", "no", "0", ""}:
        return text in {"true", "yes", "1"}
    raise ConfigError(f"migrations.{key} must be true or false")


def import_callable(path: str, key: str) -> Callable[..., Any]:
    """`module:attribute.path` to a callable; any failure is one line naming the key."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"migrations.{key} {path!r} must look like 'module:function'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except Exception as error:
        raise ConfigError(f"migrations.{key}: cannot import {path!r}: {error}") from None
    if not callable(target):
        raise ConfigError(f"migrations.{key}: {path!r} is not a function")
    return target


# --- options from an adopted env.py --------------------------------------------------------

# What env.py may pass to context.configure that changes a comparison.
ENV_KEYS = (*SWITCH_KEYS, *HOOK_KEYS, "user_module_prefix", "include_schemas")


def merge_env_options(comparison: Comparison, env_options: Mapping[str, Any]) -> Comparison:
    """env.py's own options where it sets them, `migrations.compare` for the rest.

    The tasks' own hooks (the tool-table filter, ignore rules, dialect normalisation) wrap
    whatever env.py passes, so they are unwrapped here to the user's part (`__wrapped_user__`).
    """
    from dataclasses import replace

    changes: dict[str, Any] = {}
    for key in ENV_KEYS:
        if key not in env_options:
            continue
        value = getattr(env_options[key], "__wrapped_user__", env_options[key])
        if getattr(env_options[key], "__tasks_hook__", False) and value is None:
            continue  # our own hook with no user part: nothing env.py set itself
        changes[key] = value
    return replace(comparison, **changes) if changes else comparison


# --- Alembic hooks with the tasks' rules ---------------------------------------------------


def _mark(function: Callable[..., Any], user: Any) -> Callable[..., Any]:
    function.__tasks_hook__ = True  # type: ignore[attr-defined]
    function.__wrapped_user__ = user  # type: ignore[attr-defined]
    return function


def _include_name(user: Callable[..., Any] | None) -> Callable[..., bool]:
    from tasks.core.alembic_config import TOOL_TABLES

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "table" and name in TOOL_TABLES:
            return False
        return True if user is None else bool(user(name, type_, parent_names))

    return _mark(include_name, user)


_OBJECT_OPS = {
    "table": "table",
    "column": "column",
    "index": "index",
    "unique_constraint": "constraint",
    "foreign_key_constraint": "fk",
}


def _include_object(user: Callable[..., Any] | None, comparison: Comparison) -> Callable[..., bool]:
    """The user's include_object, then the ignore rules for objects added or removed whole."""

    def include_object(obj: Any, name: Any, type_: str, reflected: bool, compare_to: Any) -> bool:
        if user is not None and not user(obj, name, type_, reflected, compare_to):
            return False
        kind = _OBJECT_OPS.get(type_)
        if kind is None or compare_to is not None or not comparison.ignore:
            return True
        op = ("remove_" if reflected else "add_") + kind
        table = obj.name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        if type_ == "foreign_key_constraint":
            table = getattr(getattr(obj, "parent", None), "name", table)
        return not comparison.ignored(op, table, None if type_ == "table" else name)

    return _mark(include_object, user)


def _type_comparator(user: bool | Callable[..., Any]) -> Any:
    if user is False:
        return False

    def compare_type(context: Any, inspected: Any, metadata: Any, db_type: Any, model: Any) -> Any:
        if callable(user):
            verdict = user(context, inspected, metadata, db_type, model)
            if verdict is not None:
                return verdict
        if same_type(context.dialect.name, db_type, model):
            return False
        return None  # Alembic's own comparison

    return _mark(compare_type, user if callable(user) else None)


def _default_comparator(user: bool | Callable[..., Any]) -> Any:
    if user is False:
        return False

    def compare_server_default(
        context: Any,
        inspected: Any,
        metadata: Any,
        database_default: Any,
        model_default: Any,
        rendered_model_default: Any,
    ) -> Any:
        if callable(user):
            verdict = user(
                context, inspected, metadata, database_default, model_default,
                rendered_model_default,
            )  # fmt: skip
            if verdict is not None:
                return verdict
        dialect = context.dialect.name
        if identity_unsupported(dialect, metadata, database_default):
            return False
        if same_default(dialect, database_default, rendered_model_default):
            return False
        return None

    return _mark(compare_server_default, user if callable(user) else None)


# --- known dialect false positives ---------------------------------------------------------


def identity_unsupported(dialect: str, column: Any, database_default: Any) -> bool:
    """`Identity()` on a dialect without identity columns: nothing to compare in the database."""
    return (
        dialect in NO_IDENTITY
        and getattr(column, "identity", None) is not None
        and database_default in (None, "")
    )


_MYSQL_NOW = re.compile(
    r"^(?:now|current_timestamp|localtimestamp|localtime)(?:\s*\(\s*(\d*)\s*\))?$"
)


def same_default(dialect: str, database: Any, model: Any) -> bool:
    """MariaDB/MySQL store `now()` and its synonyms as `current_timestamp()`."""
    if dialect not in MYSQL or not isinstance(database, str) or not isinstance(model, str):
        return False
    return _mysql_now(database) is not None and _mysql_now(database) == _mysql_now(model)


def _mysql_now(text: str) -> str | None:
    value = text.strip().lower()
    while value.startswith("(") and value.endswith(")"):
        value = value[1:-1].strip()
    match = _MYSQL_NOW.match(value)
    if match is None:
        return None
    return f"current_timestamp({match.group(1) or ''})"


def same_type(dialect: str, database_type: Any, model_type: Any) -> bool:
    """MariaDB/MySQL store `Float(precision=25..53)` (and `Double`) as DOUBLE."""
    if dialect not in MYSQL or database_type is None or model_type is None:
        return False
    from sqlalchemy import Double, Float

    database_is_double = isinstance(database_type, Double) or type(database_type).__name__ in {
        "DOUBLE",
        "DOUBLE_PRECISION",
    }
    if not database_is_double or not isinstance(model_type, Float):
        return False
    if isinstance(model_type, Double):
        return True
    precision = getattr(model_type, "precision", None)
    return precision is not None and 24 < int(precision) <= 53


def false_positive(
    dialect: str,
    op: str,
    model_column: Any,
    database_value: Any,
    model_value: Any,
    database_type: Any = None,
) -> bool:
    """A difference Alembic reports although the database holds what the model describes."""
    if op == "modify_default":
        return identity_unsupported(dialect, model_column, database_value) or same_default(
            dialect, database_value, model_value
        )
    if op == "modify_type":
        model_type = getattr(model_column, "type", None)
        return same_type(dialect, database_type, model_type)
    return False


def filter_changes(comparison: Comparison, dialect: str, changes: Iterable[Any]) -> list[Any]:
    """`tasks.schema.fast_diff.Change`s minus ignored ones and known false positives."""
    kept = []
    for change in changes:
        if comparison.ignored(change.op, change.table, change.name):
            continue
        if change.op == "modify_type" and comparison.compare_type is False:
            continue
        if change.op == "modify_default" and comparison.compare_server_default is False:
            continue
        database_type = change.database.get("type") if isinstance(change.database, dict) else None
        if false_positive(
            dialect, change.op, change.model, change.before, change.after, database_type
        ):
            continue
        kept.append(change)
    return kept


def diff_identity(diff: tuple[Any, ...]) -> tuple[str, str | None, str | None]:
    """(op, table, name) of one of Alembic's flattened diff tuples."""
    op = diff[0]
    if op in COLUMN_OPS and op.startswith("modify_"):
        return op, diff[2], diff[3]
    if op in {"add_column", "remove_column"}:
        return op, diff[2], diff[3].name
    if op in TABLE_OPS:
        return op, diff[1].name, None
    obj = diff[1]
    table = obj.parent.name if op in {"add_fk", "remove_fk"} else obj.table.name
    name = obj.name if isinstance(obj.name, str) else None
    return op, table, name


def filter_diffs(comparison: Comparison, dialect: str, diffs: Iterable[Any]) -> list[Any]:
    """Alembic's flattened diffs minus ignored ones and known false positives.

    The comparators in `Comparison.options` already keep the false positives out of a
    comparison run under them; this catches diffs produced under other options (an adopted
    env.py's own comparators) and applies the ignore rules to every kind of difference.
    """
    kept = []
    for diff in diffs:
        op, table, name = diff_identity(diff)
        if comparison.ignored(op, table, name):
            continue
        if op == "modify_type" and same_type(dialect, diff[5], diff[6]):
            continue
        if op == "modify_default" and _default_false_positive(dialect, diff[5], diff[6]):
            continue
        kept.append(diff)
    return kept


def _default_false_positive(dialect: str, database: Any, model: Any) -> bool:
    from sqlalchemy import Identity

    if isinstance(model, Identity):
        return dialect in NO_IDENTITY and database is None
    return same_default(dialect, _diff_text(database), _diff_text(model))


def _diff_text(value: Any) -> Any:
    argument = getattr(value, "arg", None)
    if argument is not None:
        return str(getattr(argument, "text", argument))
    return value


# --- one run's comparison ------------------------------------------------------------------


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
    import configparser

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
    from pathlib import Path

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
    import io

    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    from tasks.core.alembic_config import EnvHandover, alembic_config
    from tasks.core.engines import describe_database_error

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
            script.run_env()
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


# --- autogenerate ---------------------------------------------------------------------------

# AlterColumnOp attributes, the diff each one is, and the value that means "unchanged".
_ALTERATIONS = (
    ("modify_type", "modify_type", None),
    ("modify_nullable", "modify_nullable", None),
    ("modify_server_default", "modify_default", False),
    ("modify_comment", "modify_comment", False),
)


def filter_revision(directives: list[Any], comparison: Comparison) -> None:
    """Remove ignored differences from autogenerate's result, so `revision --autogenerate`
    writes exactly what `check` reports; the downgrade is rebuilt from what is left.

    Ignore rules on objects added or removed whole are also in `include_object`; column
    modifications can only be taken out here (Alembic has no filter for them).
    """
    if not comparison.ignore:
        return
    for script in directives:
        upgrades = getattr(script, "upgrade_ops_list", [])
        downgrades = getattr(script, "downgrade_ops_list", [])
        for upgrade, downgrade in zip(upgrades, downgrades, strict=False):
            upgrade.ops[:] = _kept_ops(comparison, upgrade.ops)
            upgrade.reverse_into(downgrade)


def without_tool_tables(directives: list[Any]) -> None:
    """Remove every operation on the tasks' own tables (`migration_audit`, the version table)
    from autogenerate's result, whatever env.py's filters let through."""
    from tasks.core.alembic_config import TOOL_TABLES

    for script in directives:
        upgrades = getattr(script, "upgrade_ops_list", [])
        downgrades = getattr(script, "downgrade_ops_list", [])
        for upgrade, downgrade in zip(upgrades, downgrades, strict=False):
            before = len(upgrade.ops)
            upgrade.ops[:] = [
                op for op in upgrade.ops if getattr(op, "table_name", None) not in TOOL_TABLES
            ]
            if len(upgrade.ops) != before:
                upgrade.reverse_into(downgrade)


def _kept_ops(comparison: Comparison, operations: list[Any]) -> list[Any]:
    from alembic.operations import ops

    kept = []
    for operation in operations:
        if isinstance(operation, ops.ModifyTableOps):
            operation.ops[:] = _kept_ops(comparison, operation.ops)
            if operation.ops:
                kept.append(operation)
        elif isinstance(operation, ops.AlterColumnOp):
            for attribute, op, unchanged in _ALTERATIONS:
                changed = getattr(operation, attribute) is not unchanged
                if changed and comparison.ignored(op, operation.table_name, operation.column_name):
                    setattr(operation, attribute, unchanged)
            if operation.has_changes():
                kept.append(operation)
        elif not _ignored_operation(comparison, operation):
            kept.append(operation)
    return kept


def _ignored_operation(comparison: Comparison, operation: Any) -> bool:
    try:
        diff = operation.to_diff_tuple()
        op, table, name = diff_identity(diff)
    except Exception:  # raw SQL and other operations no rule can name: never ignored
        return False
    return comparison.ignored(op, table, name)
