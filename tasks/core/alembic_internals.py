"""Every use of a private (or undocumented) Alembic or SQLAlchemy name, in one place.

Checked on Alembic 1.20.1 and SQLAlchemy 2.1.9. `tests/core/test_alembic_internals.py` asserts
that each name below still exists with the shape used here, so an upgrade that changes one fails
there, by name; `tests/test_architecture.py` fails when another module reads a private Alembic
or SQLAlchemy name. Each function names the internal it relies on:

- Alembic's module proxies (`alembic.util.langhelpers.ModuleClsProxy._setups`,
  `_install_proxy`, `_remove_proxy`): made per thread by `install`, for fleets.
- Alembic's planner (`ScriptDirectory._upgrade_revs`, `_downgrade_revs`): `planned_upgrade`,
  `planned_downgrade`, the steps `alembic upgrade`/`downgrade` would run.
- `EnvironmentContext.configure`, wrapped process-wide by `on_configure` (a public method, but
  Alembic offers no hook around the env.py it runs).
- Alembic's dialect comparison called with stand-ins instead of reflected objects
  (`DefaultImpl.compare_type`, `DefaultImpl.autogen_column_reflect`): `impl_compare_type`,
  `impl_reflect_column`, for the quick sync diff.
- SQLAlchemy's `Table._autoincrement_column`, `TypeEngine._type_affinity`,
  `TextClause._bindparams`: `autoincrement_column`, `type_affinity`, `has_bind_parameters`.
- SQLAlchemy's `Constraint._create_rule` (before 2.0.39, `AddConstraint` always set it):
  `add_constraint_ddl`.
- `Script._db_current_indicator` (what `alembic history --indicate-current` sets from inside
  env.py): `history_line`, Alembic's history line with "(current)", without running env.py.
- `MigrationScript._needs_render` (what autogenerate sets on the scripts it made itself):
  `render_with_autogenerate`, so a second script added by `process_revision_directives` (the
  contract half of an expand/contract change) is rendered like the first.
- Alembic's comparator registry (`alembic.runtime.plugins._all_plugins`, plugin
  `alembic.autogenerate.defaults`, its `PriorityDispatcher._registry` entry for
  `_user_compare_server_default`): `guard_user_default_comparison`, so that a callable
  `compare_server_default` is never called for a computed or identity column (Alembic reads
  `.arg.text` of the reflected default unchecked: `'Computed' object has no attribute 'arg'`).
- `ScriptDirectory._generate_template` (Alembic reads `<script directory>/script.py.mako`, with no
  option to name another): `revision_template_fallback`, Alembic's own generic template for a
  script directory installed without one (a wheel ships only `env.py` and `versions/`).
- `MigrationContext.on_version_apply_callbacks` (the list `on_version_apply` fills):
  `call_when_version_recorded`, the hook `op.backfill` uses to archive its bookkeeping row in
  the revision's own transaction.

Alembic's `op` and `context` per thread, so one process can migrate several databases at once:
Alembic exposes the running migration through module-level proxies: `alembic.op.create_table`
and `alembic.context.configure` look up a module global `_proxy` that `_install_proxy` sets when
a migration starts and `_remove_proxy` clears when it ends (`ModuleClsProxy` in
`alembic/util/langhelpers.py`). That is one migration per process: two threads would run each
other's operations on each other's connections. A fleet run (`tasks.fleet.targets`) instead makes
the global `_proxy` a dispatcher that forwards to the proxy installed *by the calling thread*, and
serves the proxied attributes (`context.config`, `context.script`) through the module's
`__getattr__`. Revision files and env.py are unchanged: they still write `op.add_column(...)`.
A single-threaded run behaves exactly as before; installing is idempotent and process-wide.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic.ddl.impl import DefaultImpl
    from alembic.runtime.migration import RevisionStep
    from alembic.script import ScriptDirectory
    from sqlalchemy import Column, Table
    from sqlalchemy.engine.reflection import Inspector
    from sqlalchemy.schema import AddConstraint
    from sqlalchemy.sql.elements import TextClause
    from sqlalchemy.types import TypeEngine

_installed = False
_install_lock = threading.Lock()
_current = threading.local()  # class -> stack of proxies installed by this thread


def _stack(cls: type) -> list[Any]:
    stacks: dict[type, list[Any]] = _current.__dict__.setdefault("stacks", {})
    return stacks.setdefault(cls, [])


class _Dispatcher:
    """Stands in for a module's `_proxy`: the calling thread's proxy of `cls`, or NameError
    (what Alembic's generated functions report when no migration is running)."""

    def __init__(self, cls: type) -> None:
        self._cls = cls

    def _target(self) -> Any:
        stack = _stack(self._cls)
        if not stack:
            raise NameError(f"no Alembic {self._cls.__name__} is running in this thread")
        return stack[-1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


def install() -> None:
    """Make Alembic's module proxies per thread (once per process)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        import alembic.context  # registers the proxied modules
        import alembic.op  # noqa: F401
        from alembic.util.langhelpers import ModuleClsProxy

        def install_proxy(self: Any) -> None:
            _stack(self.__class__).append(self)

        def remove_proxy(self: Any) -> None:
            stack = _stack(self.__class__)
            if stack and stack[-1] is self:
                stack.pop()
            elif self in stack:
                stack.remove(self)

        for cls, (attr_names, modules) in ModuleClsProxy._setups.items():
            for globals_, _locals in modules:
                globals_["_proxy"] = _Dispatcher(cls)
                for name in attr_names:
                    globals_.pop(name, None)
                globals_["__getattr__"] = _attribute_reader(cls, frozenset(attr_names))
        ModuleClsProxy._install_proxy = install_proxy  # type: ignore[method-assign]
        ModuleClsProxy._remove_proxy = remove_proxy  # type: ignore[method-assign]
        _installed = True


def _attribute_reader(cls: type, names: frozenset[str]) -> Any:
    """A module `__getattr__` serving `names` from the calling thread's proxy of `cls`."""

    def module_getattr(name: str) -> Any:
        if name not in names:
            raise AttributeError(name)
        stack = _stack(cls)
        if not stack:
            raise AttributeError(f"no Alembic {cls.__name__} is running in this thread: {name}")
        return getattr(stack[-1], name)

    return module_getattr


# --- Alembic's planner: ScriptDirectory._upgrade_revs / _downgrade_revs -----------------------


def planned_upgrade(
    script: ScriptDirectory, destination: str, heads: tuple[str, ...]
) -> list[RevisionStep]:
    """The steps `alembic upgrade destination` runs from `heads`: Alembic's own planner.

    `command.upgrade` calls `ScriptDirectory._upgrade_revs(revision, heads)` with the database's
    heads as a tuple; Alembic annotates the second argument as `str`, hence the ignore.
    """
    return script._upgrade_revs(destination, heads)  # type: ignore[arg-type]


def planned_downgrade(
    script: ScriptDirectory, destination: str, heads: tuple[str, ...]
) -> list[RevisionStep]:
    """The steps `alembic downgrade destination` runs from `heads` (`_downgrade_revs`, as
    `command.downgrade` calls it; the same annotation mismatch as `planned_upgrade`)."""
    return script._downgrade_revs(destination, heads)  # type: ignore[arg-type]


# --- every env.py's `context.configure`, seen by the tasks ----------------------------------

_configure_hooks: list[Any] = []


def on_configure(hook: Any) -> None:
    """Call `hook(environment_context, options) -> options` whenever any env.py calls
    `context.configure(...)`, with its arguments as keywords (once per hook, process-wide).

    Alembic gives a caller no hook around the env.py it runs: `EnvironmentContext.configure`
    (alembic/runtime/environment.py, checked on Alembic 1.20.1) is wrapped instead, so the
    tasks see the connection an env.py migrates and the options it passes, whatever env.py it
    is (an adopted one that never calls the tasks' helpers included). Hooks decide themselves
    whether a run is theirs (a plain `alembic` command carries no handover).
    """
    import functools
    import inspect

    from alembic.runtime.environment import EnvironmentContext

    with _install_lock:
        if hook in _configure_hooks:
            return
        if not _configure_hooks:
            original = EnvironmentContext.configure
            signature = inspect.signature(original)

            @functools.wraps(original)
            def configure(self: Any, *args: Any, **kwargs: Any) -> None:
                bound = signature.bind_partial(self, *args, **kwargs).arguments
                bound.pop("self", None)
                options = {**bound.pop("kw", {}), **bound}
                for each in list(_configure_hooks):
                    options = each(self, options)
                return original(self, **options)

            EnvironmentContext.configure = configure  # type: ignore[method-assign]
        _configure_hooks.append(hook)


# --- a callable compare_server_default and computed / identity columns ----------------------

_DEFAULTS_PLUGIN = "alembic.autogenerate.defaults"
_USER_DEFAULT_COMPARATOR = "_user_compare_server_default"
_GUARDED = "_tasks_guarded"


def guard_user_default_comparison() -> None:
    """Keep computed and identity columns away from a callable `compare_server_default`.

    Alembic (checked on 1.20.1) runs the user's callable first for every column with a server
    default on either side, after reading the reflected default as `conn_col.server_default
    .arg.text`: a generated column reflects as `Computed` and an identity column as
    `Identity`, which have no `.arg`, so any callable (the tasks' known-false-positive
    comparator on SQLite and MariaDB, or a team's own) crashes the whole comparison. Neither is
    a server default a callable could judge: for them the wrapped step hands over to Alembic's
    own computed and identity comparators, which come next. Only the reflected side is the
    hazard: a model's `Identity` on a dialect without identity columns (reflected as no
    default) still reaches the callable, which knows that false positive. Process-wide and
    idempotent.
    """
    import alembic.autogenerate  # noqa: F401  (registers Alembic's comparators)
    from alembic.runtime.plugins import _all_plugins
    from alembic.util.langhelpers import PriorityDispatchResult
    from sqlalchemy.schema import DefaultClause

    with _install_lock:
        registry = _all_plugins[_DEFAULTS_PLUGIN].autogenerate_comparators._registry
        for entries in registry.values():
            for position, (fn, subgroup) in enumerate(entries):
                if fn.__name__ != _USER_DEFAULT_COMPARATOR or getattr(fn, _GUARDED, False):
                    continue

                def guarded(
                    autogen_context: Any, alter_column_op: Any, schema: Any, tname: Any,
                    cname: Any, conn_col: Any, metadata_col: Any, _original: Any = fn,
                ) -> Any:  # fmt: skip
                    reflected = conn_col.server_default
                    if reflected is not None and not isinstance(reflected, DefaultClause):
                        return PriorityDispatchResult.CONTINUE
                    return _original(
                        autogen_context, alter_column_op, schema, tname, cname, conn_col,
                        metadata_col,
                    )  # fmt: skip

                guarded.__name__ = _USER_DEFAULT_COMPARATOR
                setattr(guarded, _GUARDED, True)
                entries[position] = (guarded, subgroup)


# --- a script directory without its revision template ----------------------------------------

REVISION_TEMPLATE = "script.py.mako"


def generic_revision_template() -> Path:
    """Alembic's own `generic` template's script.py.mako (what `alembic init` copies)."""
    import alembic

    return Path(alembic.__file__).parent / "templates" / "generic" / REVISION_TEMPLATE


@contextlib.contextmanager
def revision_template_fallback(script_dir: str | Path) -> Iterator[bool]:
    """While open, a revision (or merge) written into `script_dir` without a script.py.mako
    there is rendered from Alembic's generic template; yields whether the fallback applies.

    Alembic (checked on 1.20.1) renders `Path(ScriptDirectory.dir, "script.py.mako")` and has
    no option naming another file: `ScriptDirectory._generate_template` is wrapped for the
    block, for that one missing file only.
    """
    from alembic.script import ScriptDirectory

    missing = not (Path(script_dir) / REVISION_TEMPLATE).is_file()
    if not missing:
        yield False
        return
    original = ScriptDirectory._generate_template
    wanted = (Path(script_dir) / REVISION_TEMPLATE).resolve()

    def generate(self: Any, src: Path, dest: Path, **kw: Any) -> None:
        if Path(src).resolve() == wanted and not Path(src).is_file():
            src = generic_revision_template()
        original(self, src, dest, **kw)

    with _install_lock:
        ScriptDirectory._generate_template = generate  # type: ignore[method-assign]
    try:
        yield True
    finally:
        with _install_lock:
            ScriptDirectory._generate_template = original  # type: ignore[method-assign]


# --- Alembic's dialect comparison, with stand-ins for reflected objects -----------------------


def impl_compare_type(impl: DefaultImpl, database_type: Any, column: Column[Any]) -> bool:
    """`DefaultImpl.compare_type(inspector_column, metadata_column)` for a reflected type.

    Alembic reads only `.type` of the inspector column, so the quick diff passes a stand-in
    carrying the reflected type instead of building a Column for every compared column.
    """
    from types import SimpleNamespace

    return bool(impl.compare_type(SimpleNamespace(type=database_type), column))  # type: ignore[arg-type]


def impl_reflect_column(
    impl: DefaultImpl, inspector: Inspector, table_name: str, info: dict[str, Any]
) -> None:
    """`DefaultImpl.autogen_column_reflect(inspector, table, column_info)`: the dialect's
    normalisation of a reflected column (a default, autoincrement), in place on `info`; Alembic
    reads only the table's `.name`, so a stand-in carries it."""
    from types import SimpleNamespace

    impl.autogen_column_reflect(inspector, SimpleNamespace(name=table_name), info)


# --- SQLAlchemy's private attributes --------------------------------------------------------


def autoincrement_column(table: Table) -> Column[Any] | None:
    """`Table._autoincrement_column`: the column SQLAlchemy (and Alembic's comparison) treats as
    the table's autoincrementing key, or None."""
    return table._autoincrement_column


def type_affinity(type_: TypeEngine[Any]) -> type[Any] | None:
    """`TypeEngine._type_affinity`: the generic type a dialect type compares as."""
    return type_._type_affinity


def has_bind_parameters(clause: TextClause) -> bool:
    """`TextClause._bindparams`: whether a `text()` default has parameters (then it may render
    differently each time, and is not cached)."""
    return bool(clause._bindparams)


def add_constraint_ddl(constraint: Any) -> AddConstraint:
    """ALTER TABLE ADD CONSTRAINT without marking the model's constraint as created elsewhere.

    SQLAlchemy 2.0.39+ takes `isolate_from_table=False`; before it, `AddConstraint` always set the
    constraint's private `_create_rule`, which is restored here.
    """
    from sqlalchemy.schema import AddConstraint

    try:
        return AddConstraint(constraint, isolate_from_table=False)
    except TypeError:  # SQLAlchemy before 2.0.39 always isolates: undo it
        rule = constraint._create_rule
        ddl = AddConstraint(constraint)
        constraint._create_rule = rule
        return ddl


# --- Alembic's version-recorded callbacks, from inside a revision -------------------------


def call_when_version_recorded(migration_context: Any, callback: Any) -> None:
    """Have Alembic call `callback(ctx=, step=, heads=, run_args=)` after each revision's version
    row is written, inside that revision's transaction (before it commits), whatever env.py the
    project has.

    `EnvironmentContext.configure(on_version_apply=...)` is the public way, but only env.py can
    pass it; an operation (`op.backfill`) that needs it appends to the list Alembic keeps it in:
    `MigrationContext.on_version_apply_callbacks`, set from `opts["on_version_apply"]` in
    `MigrationContext.__init__` and iterated in `run_migrations` (checked on alembic 1.20;
    tests/online/test_backfill.py holds it). Adding the same callback twice adds it once.
    """
    callbacks = tuple(migration_context.on_version_apply_callbacks or ())
    if callback not in callbacks:
        migration_context.on_version_apply_callbacks = (*callbacks, callback)


def history_line(script: Any, *, current: bool, verbose: bool) -> str:
    """One revision as `alembic history` prints it, "(current)" included when `current`.

    `Script._db_current_indicator` is what `alembic history --indicate-current` sets from inside
    env.py (it runs the environment only to read the version table); the tasks read that table
    themselves, so history needs no env.py run and no models (Alembic 1.16-1.20)."""
    script._db_current_indicator = current
    return str(
        script.cmd_format(
            verbose=verbose, include_branches=True, include_doc=True, include_parents=True
        )
    )


def render_with_autogenerate(script: Any) -> None:
    """Have Alembic render `script` (an `ops.MigrationScript` a hook added to the directives)
    with autogenerate's renderer, as it renders the script it made itself
    (`MigrationScript._needs_render`, read by `RevisionContext._to_script`)."""
    script._needs_render = True
