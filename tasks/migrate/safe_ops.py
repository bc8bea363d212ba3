"""`op.drop_invalid_index`, the one operation lock-safe revisions add to Alembic's.

Its own small module because `alembic/env.py` imports it on every run (revision files call it),
while the rewriter and renderers in tasks/migrate/safe_revisions.py are needed only by autogenerate.
"""

from __future__ import annotations

from typing import Any

from alembic.operations import Operations, ops


@Operations.register_operation("drop_invalid_index")
class DropInvalidIndexOp(ops.MigrateOperation):
    """`op.drop_invalid_index(name, table)`: drop `name` only if PostgreSQL marks it INVALID.

    A concurrent build that fails (lock_timeout, a duplicate, a cancel) leaves the index in the
    catalog, INVALID: never used by queries, still maintained on every write, and in the way of
    the re-run. This drops exactly that and nothing else: a valid index of the name is kept
    (the build then skips it with IF NOT EXISTS), so no working index and no data is ever lost,
    which is why it is not a destructive statement. It needs the live catalog, so `--sql` output
    carries a comment instead; a DBA running that script by hand reads what to check.
    """

    def __init__(self, index_name: Any, table_name: str, *, schema: str | None = None) -> None:
        self.index_name = index_name
        self.table_name = table_name
        self.schema = schema

    @classmethod
    def drop_invalid_index(
        cls, operations: Operations, index_name: str, table_name: str, *, schema: str | None = None
    ) -> None:
        operations.invoke(cls(index_name, table_name, schema=schema))

    def to_diff_tuple(self) -> Any:
        raise NotImplementedError("not a model difference")


# SQL that finds an INVALID index by name in the schema (or the search path's first schema).
_INVALID_INDEX = (
    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname = :name AND n.nspname = coalesce(:schema, pg_catalog.current_schema()) "
    "AND NOT i.indisvalid"
)


@Operations.implementation_for(DropInvalidIndexOp)
def _drop_invalid_index(operations: Operations, operation: DropInvalidIndexOp) -> None:
    from sqlalchemy import text

    name = str(operation.index_name)
    context = operations.get_context()
    if context.as_sql:
        context.impl.static_output(
            f"-- {name}: drop it first (DROP INDEX CONCURRENTLY) only if a failed build left "
            "it INVALID (pg_index.indisvalid = false)"
        )
        return
    if context.dialect.name != "postgresql":  # only PostgreSQL builds indexes concurrently
        return
    found = operations.get_bind().execute(
        text(_INVALID_INDEX), {"name": name, "schema": operation.schema}
    )
    if found.first() is None:
        return
    operations.drop_index(
        name,
        table_name=operation.table_name,
        schema=operation.schema,
        postgresql_concurrently=True,
        if_exists=True,
    )


@Operations.register_operation("drop_unvalidated_constraint")
class DropUnvalidatedConstraintOp(ops.MigrateOperation):
    """`op.drop_unvalidated_constraint(name, table)`: drop it only if it is still NOT VALID.

    A foreign key is added NOT VALID and validated in a later step; when validation fails
    (a row without its parent, a lock_timeout) the NOT VALID constraint stays and the re-run's
    ADD CONSTRAINT fails on its name. This drops exactly that leftover, never a validated
    constraint; `--sql` output carries a comment instead, as for `drop_invalid_index`.
    """

    def __init__(self, constraint_name: Any, table_name: str, *, schema: str | None = None) -> None:
        self.constraint_name = constraint_name
        self.table_name = table_name
        self.schema = schema

    @classmethod
    def drop_unvalidated_constraint(
        cls,
        operations: Operations,
        constraint_name: str,
        table_name: str,
        *,
        schema: str | None = None,
    ) -> None:
        operations.invoke(cls(constraint_name, table_name, schema=schema))

    def to_diff_tuple(self) -> Any:
        raise NotImplementedError("not a model difference")


_UNVALIDATED_CONSTRAINT = (
    "SELECT 1 FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE con.conname = :name AND c.relname = :table "
    "AND n.nspname = coalesce(:schema, pg_catalog.current_schema()) AND NOT con.convalidated"
)


@Operations.implementation_for(DropUnvalidatedConstraintOp)
def _drop_unvalidated_constraint(
    operations: Operations, operation: DropUnvalidatedConstraintOp
) -> None:
    from sqlalchemy import text

    name = str(operation.constraint_name)
    context = operations.get_context()
    if context.as_sql:
        context.impl.static_output(
            f"-- {name}: drop it first only if a failed validation left it NOT VALID "
            "(pg_constraint.convalidated = false)"
        )
        return
    if context.dialect.name != "postgresql":
        return
    found = operations.get_bind().execute(
        text(_UNVALIDATED_CONSTRAINT),
        {"name": name, "table": operation.table_name, "schema": operation.schema},
    )
    if found.first() is not None:
        operations.drop_constraint(name, operation.table_name, schema=operation.schema)
