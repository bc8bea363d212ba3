"""What a squash baseline must rebuild: a database's schema as comparable data.

The proof of a baseline compares two of these, the database the old chain built and the one the
baseline alone built, on the same dialect. Everything a revision can leave behind that SQLAlchemy
can read is in it: tables (and their comments), columns in order (type as the dialect writes it,
nullability, server default, comment, identity), primary keys, foreign keys (with their actions),
unique and check constraints, indexes (expressions, partial-index conditions), views, and on
PostgreSQL sequences (with their parameters) and enum types (with their labels). Anything it
cannot read is not proven, and is said so in the README.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.core.comparison import TOOL_TABLES

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

Snapshot = dict[str, Any]


def snapshot(connection: Connection) -> Snapshot:
    """The schema of the connection's default schema, the tool's own tables left out."""
    from sqlalchemy import inspect, text

    inspector = inspect(connection)
    dialect = connection.dialect
    tables = sorted(set(inspector.get_table_names()) - TOOL_TABLES)
    found: Snapshot = {"tables": {}}
    for table in tables:
        found["tables"][table] = _table(inspector, dialect, table)
    found["views"] = {
        name: _normal(inspector.get_view_definition(name))
        for name in sorted(inspector.get_view_names())
    }
    if dialect.name == "sqlite":  # expression indexes SQLAlchemy cannot reflect
        found["index_names"] = _scalars(
            connection,
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
        )
        found["triggers"] = _scalars(
            connection, "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
        )
    if dialect.name in {"mysql", "mariadb"}:
        found["triggers"] = _scalars(
            connection,
            "SELECT trigger_name FROM information_schema.triggers "
            "WHERE trigger_schema = DATABASE() ORDER BY 1",
        )
        found["functions"] = _scalars(
            connection,
            "SELECT routine_name FROM information_schema.routines "
            "WHERE routine_schema = DATABASE() ORDER BY 1",
        )
    if dialect.name == "postgresql":
        found["index_definitions"] = [
            definition
            for table, definition in connection.execute(
                text(
                    "SELECT tablename, indexdef FROM pg_indexes "
                    "WHERE schemaname = current_schema() ORDER BY indexname"
                )
            )
            if table not in TOOL_TABLES
        ]
        found["functions"] = _scalars(
            connection,
            "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() ORDER BY 1",
        )
        found["triggers"] = _scalars(
            connection,
            "SELECT c.relname || '.' || t.tgname FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE NOT t.tgisinternal AND n.nspname = current_schema() ORDER BY 1",
        )
        found["sequences"] = _pg_sequences(connection)
        found["enums"] = {
            enum["name"]: list(enum["labels"])
            for enum in inspector.get_enums()  # type: ignore[attr-defined]  # PGInspector's
            if enum.get("visible", True)
        }
    connection.rollback()
    return found


def _table(inspector: Any, dialect: Any, table: str) -> dict[str, Any]:
    columns = [
        {
            "name": column["name"],
            "type": _type(column["type"], dialect),
            "nullable": column["nullable"],
            "default": _normal(column.get("default")),
            "comment": column.get("comment"),
            "identity": _identity(column.get("identity")),
        }
        for column in inspector.get_columns(table)
    ]
    primary = inspector.get_pk_constraint(table)
    return {
        "columns": columns,
        "comment": _table_comment(inspector, table),
        "primary_key": {
            "name": primary.get("name"),
            "columns": primary.get("constrained_columns"),
        },
        "foreign_keys": sorted(
            (
                {
                    "name": fk.get("name"),
                    "columns": fk["constrained_columns"],
                    "referred": [fk.get("referred_schema"), fk["referred_table"]],
                    "referred_columns": fk["referred_columns"],
                    "options": dict(sorted((fk.get("options") or {}).items())),
                }
                for fk in inspector.get_foreign_keys(table)
            ),
            key=repr,
        ),
        "unique": sorted(
            (
                {"name": unique.get("name"), "columns": unique["column_names"]}
                for unique in inspector.get_unique_constraints(table)
            ),
            key=repr,
        ),
        "checks": sorted(
            (
                {"name": check.get("name"), "sqltext": _normal(check.get("sqltext"))}
                for check in _checks(inspector, table)
            ),
            key=repr,
        ),
        "indexes": sorted(
            (
                {
                    "name": index.get("name"),
                    "columns": index.get("column_names"),
                    "expressions": index.get("expressions"),
                    "unique": bool(index.get("unique")),
                    "options": {
                        key: _normal(value)
                        for key, value in sorted((index.get("dialect_options") or {}).items())
                    },
                }
                for index in inspector.get_indexes(table)
            ),
            key=repr,
        ),
    }


def _table_comment(inspector: Any, table: str) -> str | None:
    if not inspector.dialect.supports_comments:  # SQLite keeps no comments
        return None
    return (inspector.get_table_comment(table) or {}).get("text")


def _checks(inspector: Any, table: str) -> list[dict[str, Any]]:
    try:
        return list(inspector.get_check_constraints(table))
    except NotImplementedError:
        return []


def _type(type_: Any, dialect: Any) -> str:
    try:
        return str(type_.compile(dialect=dialect))
    except Exception:  # a type the dialect reflects but cannot write back: compare its repr
        return repr(type_)


def _identity(identity: Any) -> Any:
    if not identity:
        return None
    return dict(sorted((key, str(value)) for key, value in dict(identity).items()))


def _normal(value: Any) -> Any:
    """Whitespace runs folded: servers reformat stored SQL, not what it means."""
    if value is None:
        return None
    return " ".join(str(value).split())


def _scalars(connection: Connection, sql: str) -> list[str]:
    from sqlalchemy import text

    rows = connection.execute(text(sql))
    return [str(row[0]) for row in rows]


def _pg_sequences(connection: Connection) -> dict[str, list[Any]]:
    from sqlalchemy import text

    rows = connection.execute(
        text(
            "SELECT sequencename, data_type::text, start_value, increment_by, min_value, "
            "max_value, cycle, cache_size FROM pg_sequences "
            "WHERE schemaname = current_schema() ORDER BY sequencename"
        )
    )
    return {row[0]: [str(value) for value in row[1:]] for row in rows}


def differences(expected: Snapshot, actual: Snapshot) -> list[str]:
    """What differs, one line per object: `where: chain ... / baseline ...`."""
    lines: list[str] = []
    _compare("", expected, actual, lines)
    return lines


def _compare(path: str, expected: Any, actual: Any, lines: list[str]) -> None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                lines.append(f"{where}: built by the chain, missing from the baseline")
            elif key not in expected:
                lines.append(f"{where}: built by the baseline, not by the chain")
            else:
                _compare(where, expected[key], actual[key], lines)
        return
    if (
        isinstance(expected, list)
        and isinstance(actual, list)
        and len(expected) == len(actual)
        and all(isinstance(item, dict) and "name" in item for item in expected + actual)
    ):
        for one, two in zip(expected, actual, strict=True):
            _compare(f"{path}[{one.get('name')}]", one, two, lines)
        return
    if expected != actual:
        lines.append(f"{path}: chain {expected!r}, baseline {actual!r}")
