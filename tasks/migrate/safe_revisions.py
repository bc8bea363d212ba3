"""Lock-safe autogenerate for PostgreSQL: revisions that keep writers moving on a live table.

Alembic writes what is shortest: `CREATE INDEX` (a SHARE lock that stops every writer for the
whole build), `ADD FOREIGN KEY` and `SET NOT NULL` (a full scan under a lock writers queue
behind), `ADD CONSTRAINT ... UNIQUE` (an index build under ACCESS EXCLUSIVE). On an existing
table this module rewrites those operations, inside `process_revision_directives`, into the
forms PostgreSQL can run while traffic goes on, and renders them as plain `op.` calls inside
`with op.get_context().autocommit_block():`, so the revision file shows what runs:

- create/drop index -> CONCURRENTLY, outside a transaction, IF [NOT] EXISTS; a create first
  calls `op.drop_invalid_index` (tasks/migrate/safe_ops.py): a failed concurrent build leaves an
  INVALID index behind, which would make the re-run fail, or be kept by IF NOT EXISTS;
- foreign key -> `NOT VALID`, then `VALIDATE CONSTRAINT` (SHARE UPDATE EXCLUSIVE: writers go
  on), after `op.drop_unvalidated_constraint` for the leftover of a failed validation;
- unique constraint -> unique index built concurrently, then `ADD CONSTRAINT ... USING INDEX`;
- `nullable=False` -> `CHECK (col IS NOT NULL) NOT VALID`, `VALIDATE`, `SET NOT NULL` (which
  PostgreSQL 12+ proves from the validated check without a scan), then drop the check (and
  drop a leftover of that check first, so a run that failed on a NULL row can be re-run).

Each step autocommits, so the brief strong lock of one step is never held through the long
scan of the next. The session's `lock_timeout` (set with `set_config(..., false)` when the
session opens, by the tasks and by env.py for plain `alembic`) is session-wide and so also
bounds every step of an autocommit block. The NOT NULL steps, whose locks are ACCESS EXCLUSIVE
but brief, are written under `op.lock_retries()` as well (tasks/online/lock_retries.py): each
waits 50 ms at most and is retried, so writers never queue behind one for long.

Tables created or dropped in the same revision are left alone: an empty new table needs no
CONCURRENTLY, and a dropped one is going away. Everything else (a volatile default, a type
change that rewrites the table on a column the shadow-column split cannot carry: a key, a
constraint) is left exactly as Alembic writes it, for the lint to flag: those
really need a human. No Invoke here: `alembic/env.py` wires this in.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import render_op
from alembic.autogenerate.rewriter import Rewriter
from alembic.operations import ops

from tasks.core.errors import ConfigError
from tasks.migrate.safe_ops import DropInvalidIndexOp, DropUnvalidatedConstraintOp

SETTING = "safe_revisions"
# PostgreSQL truncates identifiers longer than this; a truncated name would not match on drop.
MAX_IDENTIFIER = 63
# Written at module level in a revision made only of idempotent steps: after a failure part way,
# the next upgrade runs it again instead of refusing until `repair` (tasks/guard/revision_progress).
RERUNNABLE_LINE = "rerunnable = True  # each step may run again after a failure part way"
# Longest `op.execute(...)` written on one line (inside upgrade() and a `with` block: 8 columns).
LINE_BUDGET = 80


# --- the setting ------------------------------------------------------------------------------


def enabled(extra: Mapping[str, Any]) -> bool:
    """`migrations.safe_revisions`, parsed strictly: a typo must not silently switch it off.

    `extra` is the settings' untyped sections (`Settings.extra`), where the key lives. The
    default is the string "true" so that an INVOKE_MIGRATIONS_SAFE_REVISIONS variable arrives
    as text (Invoke would cast "false" to True over a boolean default).
    """
    value = extra.get(SETTING, True)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise ConfigError(f"migrations.{SETTING} must be true or false, not {value!r}")


def applies_to(dialect_name: str, is_enabled: bool) -> bool:
    """Only PostgreSQL has CONCURRENTLY, NOT VALID and VALIDATE CONSTRAINT."""
    return is_enabled and dialect_name == "postgresql"


# --- the rendered step: a `with op.get_context().autocommit_block():` block --------------------


class AutocommitBlockOp(ops.MigrateOperation):
    """Several operations run outside the revision's transaction, each committing on its own.

    `original` is the operation Alembic wrote: the block reports its diff (so the task's
    one-line-per-operation summary is unchanged), and is what a reader would expect.
    The steps are kept in `steps`, not `ops`: Alembic treats an `ops` attribute as a container
    and would report the leftover-index drop as a change of its own.
    """

    def __init__(
        self,
        original: ops.MigrateOperation,
        steps: list[Any],
        why: str,
        *,
        idempotent: bool = False,
        lock_retries: bool = False,
    ) -> None:
        self.original = original
        self.steps = steps
        self.why = why
        # Its statements take brief strong locks: written with `op.lock_retries()` (each waits
        # for its lock only briefly, retried), so writers never queue long behind one.
        self.lock_retries = lock_retries
        # Every step can run again after a failure part way (leftovers dropped first, IF [NOT]
        # EXISTS): a revision made only of such blocks declares itself re-runnable.
        self.idempotent = idempotent
        self.declares_rerunnable = False

    def to_diff_tuple(self) -> Any:
        return self.original.to_diff_tuple()

    def reverse(self) -> ops.MigrateOperation:
        return self.original.reverse()


@renderers.dispatch_for(AutocommitBlockOp)
def _render_autocommit_block(autogen_context: AutogenContext, op: AutocommitBlockOp) -> list[str]:
    if op.declares_rerunnable:  # a module-level line: Alembic writes `imports` there
        autogen_context.imports.add(RERUNNABLE_LINE)
    lines = [f"# {line}" for line in op.why.splitlines()]
    if op.lock_retries:
        lines.append("with op.get_context().autocommit_block(), op.lock_retries():")
    else:
        lines.append("with op.get_context().autocommit_block():")
    for step in op.steps:
        lines.extend(render_op(autogen_context, step))
    lines.append("")  # ends the block (Alembic's PythonPrinter dedents on a blank line)
    return lines


class SqlStepOp(ops.ExecuteSQLOp):
    """One SQL statement of a safe form (VALIDATE CONSTRAINT, ... USING INDEX).

    Given in clauses, so a long statement is written one clause a line instead of as a line
    `ruff check` rejects.
    """

    def __init__(self, *clauses: str) -> None:
        super().__init__(" ".join(clauses))
        self.clauses = clauses


@renderers.dispatch_for(SqlStepOp)
def _render_sql_step(autogen_context: AutogenContext, op: SqlStepOp) -> str:
    """`op.execute("...")` with the quotes ruff format would choose (Alembic writes '...')."""
    if not isinstance(op.sqltext, str):
        raise NotImplementedError("only plain SQL strings are rendered")
    prefix = autogen_context.opts.get("alembic_module_prefix") or "op."
    one_line = f"{prefix}execute({python_string(op.sqltext)})"
    if len(one_line) <= LINE_BUDGET or len(op.clauses) < 2:
        return one_line
    *first, last = op.clauses
    parts = [python_string(clause + " ") for clause in first] + [python_string(last)]
    # Alembic's printer indents only the first line of a multi-line item; the others are written
    # as given, then the whole body is indented once: these sit inside the `with` block.
    return f"{prefix}execute(\n" + "\n".join(f"        {part}" for part in parts) + "\n    )"


def python_string(text: str) -> str:
    """A Python literal for `text`, double-quoted unless that needs more escapes."""
    if '"' in text and "'" not in text and "\n" not in text:
        return "'" + text.replace("\\", "\\\\") + "'"
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


# --- the leftover of a failed concurrent build -----------------------------------------------


@renderers.dispatch_for(DropInvalidIndexOp)
def _render_drop_invalid_index(autogen_context: AutogenContext, op: DropInvalidIndexOp) -> str:
    prefix = autogen_context.opts.get("alembic_module_prefix") or "op."
    schema = f", schema={op.schema!r}" if op.schema else ""
    return f"{prefix}drop_invalid_index({str(op.index_name)!r}, {op.table_name!r}{schema})"


@renderers.dispatch_for(DropUnvalidatedConstraintOp)
def _render_drop_unvalidated(
    autogen_context: AutogenContext, op: DropUnvalidatedConstraintOp
) -> str:
    prefix = autogen_context.opts.get("alembic_module_prefix") or "op."
    schema = f", schema={op.schema!r}" if op.schema else ""
    name = str(op.constraint_name)
    return f"{prefix}drop_unvalidated_constraint({name!r}, {op.table_name!r}{schema})"


# --- the rewrite ------------------------------------------------------------------------------


def process_revision_directives(context: Any, revision: Any, directives: list[Any]) -> None:
    """Rewrite every script's upgrade and downgrade operations into their lock-safe forms.

    A column renamed in the models (`info={"renamed_from": ...}`), or whose type changes in a
    way that rewrites the table, first becomes two scripts, expand and contract
    (tasks/online/expand_contract.py, tasks/online/type_change.py); both are then made
    lock-safe.
    """
    from tasks.online.expand_contract import split_renames
    from tasks.online.type_change import split_type_changes

    quote = _quoter(context)
    metadata = getattr(context, "opts", {}).get("target_metadata")
    for script in list(directives):
        contract = split_renames(script, SqlStepOp, lambda op: _checked_not_null(op, quote))
        contract = split_type_changes(
            script,
            metadata,
            SqlStepOp,
            lambda op: _checked_not_null(op, quote),
            _concurrent_index,
            contract,
        )
        if contract is not None:
            directives.append(contract)
    for script in directives:
        exempt = _tables_created_or_dropped(script)
        _rewriter(exempt, _quoter(context)).process_revision_directives(context, revision, [script])
        _declare_rerunnable(script)


def _declare_rerunnable(script: Any) -> None:
    """Mark the first block when every upgrade operation can run again from the top: only
    idempotent autocommit blocks, idempotent expand steps (tasks/online/expand_contract.py's
    StepsOp, which carries `module_lines`) and columns added IF NOT EXISTS."""
    operations = list(_walk(script.upgrade_ops_list))
    blocks = [
        item
        for item in operations
        if isinstance(item, AutocommitBlockOp) or hasattr(item, "module_lines")
    ]
    if not blocks:
        return
    for item in operations:
        if getattr(item, "idempotent", False) is True:
            continue
        if isinstance(item, ops.AddColumnOp) and item.if_not_exists:
            continue
        return
    if isinstance(blocks[0], AutocommitBlockOp):
        blocks[0].declares_rerunnable = True
    else:
        blocks[0].module_lines.add(RERUNNABLE_LINE)


def _quoter(context: Any) -> Any:
    dialect = getattr(context, "dialect", None)
    if dialect is None:
        from sqlalchemy.dialects import postgresql

        dialect = postgresql.dialect()
    return dialect.identifier_preparer.quote


def _tables_created_or_dropped(script: Any) -> set[tuple[str | None, str]]:
    """(schema, table) of every table the revision creates or drops, in either direction."""
    tables: set[tuple[str | None, str]] = set()
    containers = [*script.upgrade_ops_list, *script.downgrade_ops_list]
    for operation in _walk(containers):
        if isinstance(operation, ops.CreateTableOp | ops.DropTableOp):
            tables.add((operation.schema, operation.table_name))
    return tables


def _walk(operations: Iterable[Any]) -> Iterable[Any]:
    for operation in operations:
        if isinstance(operation, ops.OpContainer):
            yield from _walk(operation.ops)
        else:
            yield operation


def _rewriter(exempt: set[tuple[str | None, str]], quote: Any) -> Rewriter:
    """A Rewriter bound to this revision's exempt tables and the dialect's identifier quoting."""
    rewriter = Rewriter()

    def is_exempt(schema: str | None, table: str | None) -> bool:
        return table is None or (schema, table) in exempt

    @rewriter.rewrites(ops.CreateIndexOp)
    def create_index(_context: Any, _revision: Any, op: ops.CreateIndexOp) -> Any:
        if is_exempt(op.schema, op.table_name) or op.index_name is None:
            return op
        return _concurrent_index(op)

    @rewriter.rewrites(ops.DropIndexOp)
    def drop_index(_context: Any, _revision: Any, op: ops.DropIndexOp) -> Any:
        if is_exempt(op.schema, op.table_name):
            return op
        return _concurrent_drop(op)

    @rewriter.rewrites(ops.CreateForeignKeyOp)
    def foreign_key(_context: Any, _revision: Any, op: ops.CreateForeignKeyOp) -> Any:
        if is_exempt(op.kw.get("source_schema"), op.source_table) or op.constraint_name is None:
            return op
        return _not_valid_foreign_key(op, quote)

    @rewriter.rewrites(ops.CreateUniqueConstraintOp)
    def unique(_context: Any, _revision: Any, op: ops.CreateUniqueConstraintOp) -> Any:
        name = op.constraint_name
        # An unnamed constraint (None, or SQLAlchemy's deferred-None sentinel) cannot be built
        # as a named index first: it stays as written.
        if is_exempt(op.schema, op.table_name) or not isinstance(name, str):
            return op
        return _unique_using_index(op, name, quote)

    @rewriter.rewrites(ops.AddColumnOp)
    def add_column(_context: Any, _revision: Any, op: ops.AddColumnOp) -> Any:
        # Committed by the autocommit block that follows: a re-run must not fail on it.
        if not is_exempt(op.schema, op.table_name):
            op.if_not_exists = True
        return op

    @rewriter.rewrites(ops.AlterColumnOp)
    def alter_column(_context: Any, _revision: Any, op: ops.AlterColumnOp) -> Any:
        if is_exempt(op.schema, op.table_name) or op.modify_nullable is not False:
            return op
        return _checked_not_null(op, quote)

    return rewriter


def _concurrent_index(op: ops.CreateIndexOp) -> AutocommitBlockOp:
    build = copy.copy(op)
    build.kw = {**op.kw, "postgresql_concurrently": True}
    build.if_not_exists = True  # a valid one left by a run that failed after building it
    return AutocommitBlockOp(
        op,
        [_leftover_drop(op.index_name, op.table_name, op.schema), build],
        "CREATE INDEX CONCURRENTLY: writers keep going; it cannot run in a transaction.\n"
        "A failed concurrent build leaves an INVALID index: drop such a leftover first.",
        idempotent=True,
    )


def _leftover_drop(name: Any, table: str, schema: str | None) -> DropInvalidIndexOp:
    return DropInvalidIndexOp(name, table, schema=schema)


def _concurrent_drop(op: ops.DropIndexOp) -> AutocommitBlockOp:
    drop = copy.copy(op)
    drop.kw = {**op.kw, "postgresql_concurrently": True}
    drop.if_exists = True
    return AutocommitBlockOp(
        op,
        [drop],
        "DROP INDEX CONCURRENTLY: writers keep going; it cannot run in a transaction.",
        idempotent=True,
    )


def _qualified(quote: Any, schema: str | None, table: str) -> str:
    return f"{quote(schema)}.{quote(table)}" if schema else quote(table)


def _not_valid_foreign_key(op: ops.CreateForeignKeyOp, quote: Any) -> AutocommitBlockOp:
    create = copy.copy(op)
    create.kw = {**op.kw, "postgresql_not_valid": True}
    table = _qualified(quote, op.kw.get("source_schema"), op.source_table)
    validate = SqlStepOp(
        f"ALTER TABLE {table}", f"VALIDATE CONSTRAINT {quote(str(op.constraint_name))}"
    )
    leftover = DropUnvalidatedConstraintOp(
        op.constraint_name, op.source_table, schema=op.kw.get("source_schema")
    )
    return AutocommitBlockOp(
        op,
        [leftover, create, validate],
        "Foreign key added NOT VALID (a brief lock), then validated: VALIDATE CONSTRAINT\n"
        "scans under SHARE UPDATE EXCLUSIVE, so writers keep going; each step commits.\n"
        "A failed validation leaves it NOT VALID: drop such a leftover first.",
    )


def _unique_using_index(
    op: ops.CreateUniqueConstraintOp, name: str, quote: Any
) -> AutocommitBlockOp:
    build = ops.CreateIndexOp(
        name, op.table_name, list(op.columns), schema=op.schema, unique=True,
        if_not_exists=True, postgresql_concurrently=True,
    )  # fmt: skip
    table = _qualified(quote, op.schema, op.table_name)
    attach = SqlStepOp(
        f"ALTER TABLE {table}",
        f"ADD CONSTRAINT {quote(str(name))}",
        f"UNIQUE USING INDEX {quote(str(name))}",
    )
    return AutocommitBlockOp(
        op,
        [_leftover_drop(name, op.table_name, op.schema), build, attach],
        "Unique index built CONCURRENTLY (a failed build leaves an INVALID index: drop it\n"
        "first), then attached as the constraint: USING INDEX needs no scan.",
    )


def _checked_not_null(op: ops.AlterColumnOp, quote: Any) -> list[Any]:
    """SET NOT NULL proven by a validated CHECK; other changes in the same op stay as written."""
    table = _qualified(quote, op.schema, op.table_name)
    column = quote(op.column_name)
    check = quote(_not_null_check_name(op.table_name, op.column_name))
    set_not_null = ops.AlterColumnOp(
        op.table_name,
        op.column_name,
        schema=op.schema,
        existing_type=op.modify_type if op.modify_type is not None else op.existing_type,
        existing_server_default=op.existing_server_default,
        existing_comment=op.existing_comment,
        existing_nullable=True,
        modify_nullable=False,
    )
    block = AutocommitBlockOp(
        set_not_null,
        [
            # Only this revision uses the name: a leftover of a failed run, valid or not, goes.
            SqlStepOp(f"ALTER TABLE {table}", f"DROP CONSTRAINT IF EXISTS {check}"),
            SqlStepOp(
                f"ALTER TABLE {table}",
                f"ADD CONSTRAINT {check}",
                f"CHECK ({column} IS NOT NULL) NOT VALID",
            ),
            SqlStepOp(f"ALTER TABLE {table}", f"VALIDATE CONSTRAINT {check}"),
            set_not_null,
            SqlStepOp(f"ALTER TABLE {table}", f"DROP CONSTRAINT {check}"),
        ],
        "NOT NULL without a scan under ACCESS EXCLUSIVE: a CHECK added NOT VALID, validated\n"
        "while writers go on, lets SET NOT NULL (PostgreSQL 12+) skip the scan; then dropped.\n"
        "A failed run leaves the CHECK behind: it is dropped first. Each step waits for its\n"
        "lock briefly, retried (op.lock_retries): writers never queue long behind one.",
        idempotent=True,
        lock_retries=True,
    )
    rest = copy.copy(op)
    rest.modify_nullable = None
    rest.existing_nullable = True
    if _changes_more_than_nullable(op):
        return [rest, block]
    return [block]


def _changes_more_than_nullable(op: ops.AlterColumnOp) -> bool:
    return (
        op.modify_type is not None
        or op.modify_server_default is not False
        or op.modify_comment is not False
        or op.modify_name is not None
    )


def _not_null_check_name(table: str, column: str) -> str:
    return f"ck_{table}_{column}_not_null"[:MAX_IDENTIFIER]


# --- the written file ---------------------------------------------------------------------------
