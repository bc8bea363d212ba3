"""Expand/contract for a column whose type changes in place (same name) on PostgreSQL.

`ALTER TABLE ... ALTER COLUMN ... TYPE` rewrites the whole table (and rebuilds its indexes) under
ACCESS EXCLUSIVE unless the old type is binary-coercible to the new one: integer -> bigint on a
large table stops every reader and writer for minutes. Autogenerate writes exactly that. When
the change rewrites, `split_type_changes` writes two revisions instead:

- **expand**: a shadow column `<col>__new` of the new type (nullable at first), a trigger that
  sets it from the old column on every INSERT and UPDATE (one direction is enough: the
  application only knows the column's one name, so it never writes the shadow), `op.backfill`
  of the rows that exist with `CAST(col AS newtype)`, then the model's default, NOT NULL (in its
  lock-safe form) and indexes (built CONCURRENTLY under `<index>__new` names). Its downgrade
  drops the trigger and the shadow column (its indexes go with it).
- **contract** (`contract = True`): one `DO` statement, so one short transaction, under
  `op.lock_retries()`: drop the trigger, drop the old column, rename the shadow to the old name
  and its indexes to the model's names. Catalog changes only: no scan, no rewrite. Its
  downgrade is the same dance backwards, online as well: a shadow `<col>__old` of the old type,
  filled by trigger and backfill, then one short swap transaction back to the expanded state.

The application uses the same column name throughout, so old and new code both work between
the two revisions. A value the new type cannot hold (text 'abc' -> integer) fails the write
that carries it once the trigger is in place, as the plain ALTER would have failed: fix the
data first.

Not handled (the plain `alter_column` stays, for the lint to flag): a column in the primary key,
in a foreign key either way, in a unique or check constraint, in an expression or partial
index, or whose default calls `nextval` (a serial: dropping the old column drops its sequence).
No Invoke here; the lock-safe rewriter (tasks/migrate/safe_revisions.py) calls this.
"""

from __future__ import annotations

import copy
import hashlib
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alembic.operations import ops
from sqlalchemy import Column, Index, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import conv

from tasks.online.backfill import BackfillOp, BackfillSpec
from tasks.online.expand_contract import (
    MAX_IDENTIFIER,
    NotNull,
    SqlStep,
    StepsOp,
    contract_script,
)

# Makes a CreateIndexOp concurrent, outside a transaction, re-runnable (the lock-safe rewriter's).
ConcurrentIndex = Callable[[ops.CreateIndexOp], Any]

_TYPE = re.compile(r"^(?P<name>[A-Z][A-Z ]*?)\s*(?:\((?P<args>[\d\s,]*)\))?$")
_TEXTUAL = {"VARCHAR", "TEXT", "CHARACTER VARYING"}


def bounded(name: str, suffix: str) -> str:
    """`name + suffix` within PostgreSQL's 63 characters, deterministic: a long name is cut and
    given a short hash of itself, so two long names that share a prefix still differ."""
    if len(name) + len(suffix) <= MAX_IDENTIFIER:
        return name + suffix
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]  # noqa: S324 (a name, not a secret)
    return f"{name[: MAX_IDENTIFIER - len(suffix) - 9]}_{digest}{suffix}"


def stored_index_name(index: Index) -> str:
    """The name PostgreSQL holds for the model's index. SQLAlchemy creates a naming
    convention's name over 63 characters cut to 55 and four hex digits of its MD5
    (`ix_..._740c`); PostgreSQL cuts any other name to 63. Renaming an index to the model's
    full name would leave it under PostgreSQL's cut, which the models' check sees as a
    different index."""
    name = str(index.name)
    if len(name) <= MAX_IDENTIFIER:
        return name
    if isinstance(index.name, conv):
        digest = hashlib.md5(name.encode()).hexdigest()[-4:]  # noqa: S324 (SQLAlchemy's rule)
        return f"{name[: MAX_IDENTIFIER - 8]}_{digest}"
    return name.encode()[:MAX_IDENTIFIER].decode(errors="ignore")


def type_sql(type_: Any) -> str:
    """The type as PostgreSQL DDL (`INTEGER`, `VARCHAR(20)`, `NUMERIC(10, 2)`)."""
    return str(type_.compile(dialect=postgresql.dialect()))


def _parse(sql: str) -> tuple[str, tuple[int, ...]] | None:
    match = _TYPE.match(sql.strip().upper())
    if match is None:
        return None
    args = match["args"]
    try:
        numbers = tuple(int(a) for a in args.split(",")) if args and args.strip() else ()
    except ValueError:
        return None
    return match["name"], numbers


def rewrites_table(old_type: Any, new_type: Any) -> bool:
    """Whether `ALTER COLUMN ... TYPE` from `old_type` to `new_type` rewrites the table.

    PostgreSQL ("ALTER TABLE", Notes) skips the rewrite when the old type is binary-coercible
    to the new one and no constraint of the new type needs checking: varchar(n) -> varchar(m)
    for m >= n, varchar/text -> text or unbounded varchar, numeric(p, s) -> numeric(q, s) for
    q >= p, or to unconstrained numeric. Those stay a plain `alter_column` (a catalog change).
    Anything else, and anything this cannot parse or compile, counts as rewriting: a wrong
    "no rewrite" answer stops production, a wrong "rewrite" answer costs an extra revision.
    """
    try:
        old_sql, new_sql = type_sql(old_type), type_sql(new_type)
    except Exception:  # a type that does not compile for PostgreSQL: fail closed
        return True
    if old_sql == new_sql:
        return False
    old, new = _parse(old_sql), _parse(new_sql)
    if old is None or new is None:
        return True
    (old_name, old_args), (new_name, new_args) = old, new
    if old_name in _TEXTUAL and new_name in _TEXTUAL:
        if not new_args:  # text, or varchar without a limit
            return False
        return not (old_name != "TEXT" and old_args and new_args[0] >= old_args[0])
    if old_name == "NUMERIC" and new_name == "NUMERIC":
        if not new_args:
            return False
        if not old_args:
            return True
        old_scale = old_args[1] if len(old_args) > 1 else 0
        new_scale = new_args[1] if len(new_args) > 1 else 0
        return not (old_scale == new_scale and new_args[0] >= old_args[0])
    return True


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class TypeChange:
    """One column of one table changing type in a way that rewrites the table, and the SQL of
    each half. `column` is the model's column (new type, default, nullability); `old_type` the
    type the database has now."""

    schema: str | None
    table: str
    column: Column[Any]
    old_type: Any
    indexes: list[Index] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.column.name)

    @property
    def shadow(self) -> str:
        return bounded(self.name, "__new")

    @property
    def old_shadow(self) -> str:
        return bounded(self.name, "__old")

    @property
    def trigger(self) -> str:
        return bounded(f"{self.table}_{self.name}", "_retype_sync")

    @property
    def back_trigger(self) -> str:
        return bounded(f"{self.table}_{self.name}", "_retype_back")

    @property
    def new_sql(self) -> str:
        return type_sql(self.column.type)

    @property
    def old_sql(self) -> str:
        return type_sql(self.old_type)

    def qualified(self, name: str) -> str:
        return f"{_quote(self.schema)}.{_quote(name)}" if self.schema else _quote(name)

    # --- pieces ---------------------------------------------------------------------------

    def trigger_sql(
        self, trigger: str, source: str, target: str, target_sql: str
    ) -> tuple[list[str], list[str]]:
        """Function and trigger setting `target` from `source` on every write (two statements,
        as clause lists). BEFORE INSERT OR UPDATE: the row is written once, already in step."""
        return [
            f"CREATE FUNCTION {self.qualified(trigger)}() RETURNS trigger LANGUAGE plpgsql",
            f"AS $$ BEGIN NEW.{_quote(target)} := CAST(NEW.{_quote(source)} AS {target_sql});",
            "RETURN NEW; END $$",
        ], [
            f"CREATE TRIGGER {_quote(trigger)} BEFORE INSERT OR UPDATE",
            f"ON {self.qualified(self.table)} FOR EACH ROW",
            f"EXECUTE FUNCTION {self.qualified(trigger)}()",
        ]

    def drop_trigger_sql(self, trigger: str) -> list[str]:
        return [
            f"DROP TRIGGER IF EXISTS {_quote(trigger)} ON {self.qualified(self.table)};",
            f"DROP FUNCTION IF EXISTS {self.qualified(trigger)}();",
        ]

    def default_sql(self) -> str | None:
        """The model's server default as DDL (None: it has none)."""
        arg = getattr(self.column.server_default, "arg", None)
        if arg is None:
            return None
        if isinstance(arg, str):
            return "'" + arg.replace("'", "''") + "'"
        compiled = arg.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
        return str(compiled)

    def index_op(self, index: Index, suffix: str) -> ops.CreateIndexOp:
        columns = [
            (bounded(self.name, suffix) if c.name == self.name else c.name) for c in index.columns
        ]
        return ops.CreateIndexOp(
            bounded(str(index.name), suffix),
            self.table,
            columns,
            schema=self.schema,
            unique=bool(index.unique),
        )

    # --- the halves -----------------------------------------------------------------------

    def shadow_steps(
        self,
        *,
        shadow: str,
        shadow_type: Any,
        trigger: str,
        suffix: str,
        sql_step: SqlStep,
        not_null: NotNull,
        concurrent_index: ConcurrentIndex,
    ) -> list[Any]:
        """A column `shadow` of `shadow_type`, kept in step with the column by `trigger`,
        backfilled, then given the model's default, NOT NULL and indexes (under `suffix`)."""
        added = Column(shadow, shadow_type, nullable=True)
        target_sql = type_sql(shadow_type)
        table = self.qualified(self.table)
        function, create = self.trigger_sql(trigger, self.name, shadow, target_sql)
        cast = f"CAST({_quote(self.name)} AS {target_sql})"
        steps: list[Any] = [
            # Every stored value must cast before the trigger exists: a value that does not would
            # make the trigger fail every later write of its row, whatever column it changes.
            sql_step(f"SELECT count({cast}) FROM {table}"),  # noqa: S608 - quoted identifiers
            ops.AddColumnOp(self.table, added, schema=self.schema, if_not_exists=True),
            *[sql_step(clause) for clause in self.drop_trigger_sql(trigger)],  # a leftover
            sql_step(*function),
            sql_step(*create),
            BackfillOp(
                BackfillSpec(
                    table=self.table,
                    values=((shadow, cast),),
                    where=f"{_quote(shadow)} IS DISTINCT FROM {cast}",
                    schema=self.schema,
                )
            ),
        ]
        default = self.default_sql()
        if default is not None:
            steps.append(
                sql_step(
                    f"ALTER TABLE {table}", f"ALTER COLUMN {_quote(shadow)} SET DEFAULT {default}"
                )
            )
        if self.column.nullable is False:
            steps.extend(
                not_null(
                    ops.AlterColumnOp(
                        self.table,
                        shadow,
                        schema=self.schema,
                        existing_type=shadow_type,
                        existing_nullable=True,
                        modify_nullable=False,
                    )
                )
            )
        steps.extend(concurrent_index(self.index_op(index, suffix)) for index in self.indexes)
        return steps

    def verify_sql(self, shadow: str, target_sql: str) -> list[str]:
        """Before a swap: the shadow holds the cast of every row's value. A write that bypassed
        the trigger (`session_replication_role = replica`, a disabled trigger, a restore) would
        otherwise be lost without a word when the old column is dropped."""
        table = self.qualified(self.table)
        cast = f"CAST({_quote(self.name)} AS {target_sql})"
        differs = f"{_quote(shadow)} IS DISTINCT FROM {cast}"
        fix = f"UPDATE {table} SET {_quote(shadow)} = {cast} WHERE {differs}"  # noqa: S608
        message = (
            f"% rows of {self.table}.{shadow} differ from {self.name} (a write bypassed the "
            f"trigger); nothing was swapped: run {fix}, then this revision again"
        )
        literal = message.replace("%", "%%").replace("%% rows", "% rows", 1).replace("'", "''")
        statement = " ".join(
            [
                "DO $do$ DECLARE differing bigint; BEGIN",
                f"SELECT count(*) INTO differing FROM {table} WHERE {differs};",  # noqa: S608
                f"IF differing > 0 THEN RAISE EXCEPTION '{literal}', differing;",
                "END IF; END $do$",
            ]
        )
        # Clauses short enough for the revision file's line length (joined by one space).
        return textwrap.wrap(statement, 72, break_long_words=False, break_on_hyphens=False)

    def swap_sql(self) -> list[str]:
        """The contract: one `DO` statement (one transaction), catalog changes only."""
        table = self.qualified(self.table)
        body = [
            *self.drop_trigger_sql(self.trigger),
            f"ALTER TABLE {table} DROP COLUMN {_quote(self.name)};",
            f"ALTER TABLE {table} RENAME COLUMN {_quote(self.shadow)} TO {_quote(self.name)};",
            *[
                f"ALTER INDEX {self.qualified(bounded(str(ix.name), '__new'))} "
                f"RENAME TO {_quote(stored_index_name(ix))};"
                for ix in self.indexes
            ],
        ]
        return ["DO $do$ BEGIN", *body, "END $do$"]

    def swap_back_sql(self) -> list[str]:
        """The contract's downgrade, last step: the new-type column becomes the shadow again,
        the `__old` column (filled by then) takes the name back, and the expand's trigger
        returns. One `DO` statement, catalog changes only."""
        table = self.qualified(self.table)
        function, create = self.trigger_sql(self.trigger, self.name, self.shadow, self.new_sql)
        renames = []
        for ix in self.indexes:
            name, stored = str(ix.name), stored_index_name(ix)
            renames.append(
                f"ALTER INDEX {self.qualified(stored)} RENAME TO {_quote(bounded(name, '__new'))};"
            )
        for ix in self.indexes:
            name, stored = str(ix.name), stored_index_name(ix)
            renames.append(
                f"ALTER INDEX {self.qualified(bounded(name, '__old'))} RENAME TO {_quote(stored)};"
            )
        body = [
            *self.drop_trigger_sql(self.back_trigger),
            f"ALTER TABLE {table} RENAME COLUMN {_quote(self.name)} TO {_quote(self.shadow)};",
            f"ALTER TABLE {table} RENAME COLUMN {_quote(self.old_shadow)} TO {_quote(self.name)};",
            *renames,
            *function[:-1],
            function[-1] + ";",
            *create[:-1],
            create[-1] + ";",
        ]
        return ["DO $do$ BEGIN", *body, "END $do$"]

    def expand(
        self, original: Any, sql_step: SqlStep, not_null: NotNull, concurrent_index: ConcurrentIndex
    ) -> StepsOp:
        steps = self.shadow_steps(
            shadow=self.shadow,
            shadow_type=self.column.type,
            trigger=self.trigger,
            suffix="__new",
            sql_step=sql_step,
            not_null=not_null,
            concurrent_index=concurrent_index,
        )
        why = (
            f"Expand: {self.table}.{self.name} becomes {self.new_sql} (from {self.old_sql}), a\n"
            "change that rewrites the table under ACCESS EXCLUSIVE. Instead: a shadow column of\n"
            f"the new type ({self.shadow}), set by a trigger from every write of the column (the\n"
            "application writes only the one name it knows), existing rows backfilled in\n"
            "batches; the contract revision swaps the names."
        )
        return StepsOp(original, steps, why, lock_retries=True, idempotent=True)

    def expand_downgrade(self, original: Any, sql_step: SqlStep) -> StepsOp:
        table = self.qualified(self.table)
        steps = [
            *[sql_step(clause) for clause in self.drop_trigger_sql(self.trigger)],
            sql_step(f"ALTER TABLE {table} DROP COLUMN IF EXISTS {_quote(self.shadow)}"),
        ]
        why = "The trigger, then the shadow column (its indexes go with it)."
        return StepsOp(original, steps, why, lock_retries=True)

    def contract(self, sql_step: SqlStep) -> Any:
        original = ops.AlterColumnOp(
            self.table,
            self.name,
            schema=self.schema,
            existing_type=self.old_type,
            modify_type=self.column.type,
        )
        why = (
            f"Contract: {self.table}.{self.shadow} takes the name {self.name}: in one short\n"
            "transaction (a single DO statement) under a brief lock wait, retried: the trigger\n"
            "goes, the old column goes, the shadow and its indexes take the model's names."
        )
        steps = [sql_step(*self.verify_sql(self.shadow, self.new_sql)), sql_step(*self.swap_sql())]
        step = StepsOp(original, steps, why, lock_retries=True)
        return ops.ModifyTableOps(self.table, [step], schema=self.schema)

    def contract_downgrade(
        self, sql_step: SqlStep, not_null: NotNull, concurrent_index: ConcurrentIndex
    ) -> Any:
        original = ops.AlterColumnOp(
            self.table,
            self.name,
            schema=self.schema,
            existing_type=self.column.type,
            modify_type=self.old_type,
        )
        old_column = copy.copy(self.column)
        old_column.type = self.old_type
        steps = self.shadow_steps(
            shadow=self.old_shadow,
            shadow_type=self.old_type,
            trigger=self.back_trigger,
            suffix="__old",
            sql_step=sql_step,
            not_null=not_null,
            concurrent_index=concurrent_index,
        )
        steps.append(sql_step(*self.verify_sql(self.old_shadow, self.old_sql)))
        steps.append(sql_step(*self.swap_back_sql()))
        why = (
            f"Back to the expanded state, online too: a shadow {self.old_shadow} of the old type\n"
            "is filled (trigger and backfill), then one short transaction swaps the names and\n"
            "brings back the expand's trigger."
        )
        return ops.ModifyTableOps(
            self.table, [StepsOp(original, steps, why, lock_retries=True)], schema=self.schema
        )


# --- finding them -------------------------------------------------------------------------


def _model_table(metadata: Any, schema: str | None, table: str) -> Table | None:
    key = f"{schema}.{table}" if schema else table
    for item in metadata if isinstance(metadata, list | tuple) else [metadata]:
        if item is not None and key in item.tables:
            return item.tables[key]
    return None


def _supported(table: Table, column: Column[Any]) -> list[Index] | None:
    """The column's indexes when the shadow dance can carry them; None when it cannot."""
    from sqlalchemy import CheckConstraint, ForeignKeyConstraint, UniqueConstraint

    if column.primary_key or column.foreign_keys or column.identity is not None:
        return None
    if not table.primary_key.columns:  # op.backfill walks the primary key
        return None
    default = column.server_default
    if default is not None and "nextval" in str(getattr(default, "arg", "")):
        return None
    for constraint in table.constraints:
        kinds = UniqueConstraint | ForeignKeyConstraint | CheckConstraint
        if isinstance(constraint, kinds) and column.name in {
            c.name for c in getattr(constraint, "columns", [])
        }:
            return None
    for fk_table in table.metadata.tables.values():
        for fk in fk_table.foreign_keys:
            if fk.target_fullname.split(".")[-1] == column.name and fk.references(table):
                return None
    indexes = []
    for index in table.indexes:
        names = {c.name for c in index.columns}
        if column.name not in names:
            continue
        if (
            len(index.expressions) != len(index.columns)
            or index.dialect_options["postgresql"].get("where") is not None
        ):
            return None
        indexes.append(index)
    return sorted(indexes, key=lambda ix: str(ix.name))


def find_type_changes(upgrade_ops: Any, metadata: Any) -> list[tuple[TypeChange, Any, Any]]:
    """(change, its ModifyTableOps, the AlterColumnOp) for every rewriting type change that the
    shadow-column dance supports."""
    found = []
    for table_ops in upgrade_ops.ops:
        if not isinstance(table_ops, ops.ModifyTableOps):
            continue
        for op in table_ops.ops:
            if not isinstance(op, ops.AlterColumnOp) or op.modify_type is None:
                continue
            if op.modify_name is not None or op.existing_type is None:
                continue
            if not rewrites_table(op.existing_type, op.modify_type):
                continue
            table = _model_table(metadata, table_ops.schema, table_ops.table_name)
            if table is None or op.column_name not in table.c:
                continue
            column = table.c[op.column_name]
            indexes = _supported(table, column)
            if indexes is None:
                continue
            change = TypeChange(
                table_ops.schema, table_ops.table_name, column, op.existing_type, indexes
            )
            found.append((change, table_ops, op))
    return found


def split_type_changes(
    script: Any,
    metadata: Any,
    sql_step: SqlStep,
    not_null: NotNull,
    concurrent_index: ConcurrentIndex,
    contract: Any | None = None,
) -> Any | None:
    """Rewrite `script` into the expand half; return the contract half (`contract` extended
    when the rename split already made one; None when there is nothing to split)."""
    changes = find_type_changes(script.upgrade_ops, metadata)
    if not changes:
        return contract
    up: list[Any] = []
    down: list[Any] = []
    for change, table_ops, alter in changes:
        table_ops.ops = [
            change.expand(alter, sql_step, not_null, concurrent_index) if op is alter else op
            for op in table_ops.ops
        ]
        _replace_downgrade(script.downgrade_ops, change, sql_step)
        up.append(change.contract(sql_step))
        down.append(change.contract_downgrade(sql_step, not_null, concurrent_index))
    if contract is not None:
        contract.upgrade_ops.ops.extend(up)
        contract.downgrade_ops.ops[:0] = list(reversed(down))
        return contract
    return contract_script(script, up, list(reversed(down)))


def _replace_downgrade(downgrade_ops: Any, change: TypeChange, sql_step: SqlStep) -> None:
    for table_ops in downgrade_ops.ops:
        if not isinstance(table_ops, ops.ModifyTableOps):
            continue
        if (table_ops.schema, table_ops.table_name) != (change.schema, change.table):
            continue
        table_ops.ops = [
            change.expand_downgrade(op, sql_step)
            if isinstance(op, ops.AlterColumnOp)
            and op.column_name == change.name
            and op.modify_type is not None
            else op
            for op in table_ops.ops
        ]
