"""Alembic's view of how models and a database differ, in words people read.

`compare()` is Alembic's `compare_metadata` under the same options autogenerate uses, so
`check` reports exactly what the next `revision --autogenerate` would write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Connection

    from tasks.core.comparison import Comparison

# Diff kinds that lose data when a revision applies them.
DESTRUCTIVE_KINDS = frozenset({"remove_table", "remove_column"})


def compare(
    connection: Connection, metadata: MetaData, comparison: Comparison | None = None
) -> list[Any]:
    """Alembic's differences, flattened: one tuple per change, under the project's comparison
    configuration (hooks, ignore rules, known dialect false positives: `tasks.core.comparison`)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tasks.core.alembic_internals import guard_user_default_comparison
    from tasks.core.comparison import Comparison, filter_diffs

    guard_user_default_comparison()
    comparison = comparison or Comparison()
    context = MigrationContext.configure(
        connection, opts=comparison.options(connection.dialect.name)
    )
    diffs = flatten(compare_metadata(context, metadata))
    return filter_diffs(comparison, connection.dialect.name, diffs)


def flatten(diffs: list[Any]) -> list[tuple[Any, ...]]:
    """Column modifications come grouped in lists; everything else is a tuple already."""
    flat: list[tuple[Any, ...]] = []
    for diff in diffs:
        flat.extend(diff if isinstance(diff, list) else [diff])
    return flat


def describe(diff: tuple[Any, ...]) -> str:
    """One line per difference, naming the table and column it concerns."""
    kind = diff[0]
    if kind in {"add_table", "remove_table"}:
        return f"{kind} {diff[1].name}"
    if kind in {"add_column", "remove_column"}:
        return f"{kind} {diff[2]}.{diff[3].name}"
    if kind in {"add_index", "remove_index", "add_constraint", "remove_constraint"}:
        item = diff[1]
        columns = ", ".join(column.name for column in item.columns)
        return f"{kind} {item.name or '(unnamed)'} on {item.table.name}({columns})"
    if kind in {"add_fk", "remove_fk"}:
        fk = diff[1]
        columns = ", ".join(column.name for column in fk.columns)
        target = fk.referred_table.name
        return f"{kind} {fk.name or '(unnamed)'} on {fk.parent.name}({columns}) -> {target}"
    if kind.startswith("modify_"):
        _, _schema, table, column, _existing, old, new = diff
        return f"{kind} {table}.{column}: {_text(old)} -> {_text(new)}"
    if kind in {"add_table_comment", "remove_table_comment"}:
        return f"{kind} {diff[1].name}"
    return f"{kind} {diff[1:]}"


def describe_change(change: Any) -> str:
    """`describe` for the quick comparison's `fast_diff.Change` (what `check` and sync use)."""
    op = change.op
    table = change.table  # as Alembic's own diffs name it (`describe`), without its schema
    if op in {"add_table", "remove_table", "add_table_comment", "remove_table_comment"}:
        return f"{op} {table}"
    if op in {"add_column", "remove_column"}:
        return f"{op} {table}.{change.name}"
    if op.startswith("modify_"):
        return f"{op} {table}.{change.name}: {change.before or 'none'} -> {change.after or 'none'}"
    name = change.name or "(unnamed)"
    if op in {"add_fk", "remove_fk"}:
        from tasks.schema.fast_diff import fk_text

        return f"{op} {name} on {table} {fk_text(change.signature)}"
    columns = ", ".join(str(item) for item in change.signature if isinstance(item, str))
    return f"{op} {name} on {table}({columns})"


def _text(value: Any) -> str:
    if value is None:
        return "none"
    argument = getattr(value, "arg", None)  # server defaults
    if argument is not None:
        return str(getattr(argument, "text", argument))
    return str(value)
