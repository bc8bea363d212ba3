"""The private Alembic and SQLAlchemy names `tasks.core.alembic_internals` relies on still exist
with the shape it expects.

A newer Alembic or SQLAlchemy that renames or reshapes one of them fails here, by name, instead
of breaking fleets or the quick sync path at run time. When one fails: adapt the function of
`tasks/core/alembic_internals.py` that names it, and update the versions its docstring lists.
"""

from __future__ import annotations

import inspect

import pytest


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_module_proxies_are_registered_as_alembic_installs_them() -> None:
    import alembic.context
    import alembic.op  # noqa: F401
    from alembic.util.langhelpers import ModuleClsProxy

    setups = ModuleClsProxy._setups
    assert isinstance(setups, dict) and setups, "ModuleClsProxy._setups: class -> (names, modules)"
    for cls, (attr_names, modules) in setups.items():
        assert isinstance(cls, type)
        assert all(isinstance(name, str) for name in attr_names)
        for globals_, _locals in modules:
            assert isinstance(globals_, dict)  # a proxied module's globals, `_proxy` set in it
            assert globals_["__name__"] in {"alembic.op", "alembic.context"}
    assert callable(ModuleClsProxy._install_proxy)
    assert callable(ModuleClsProxy._remove_proxy)
    assert parameters(ModuleClsProxy._install_proxy) == ["self"]
    assert parameters(ModuleClsProxy._remove_proxy) == ["self"]


def test_the_planner_takes_a_destination_and_the_current_heads() -> None:
    from alembic.script import ScriptDirectory

    assert parameters(ScriptDirectory._upgrade_revs) == ["self", "destination", "current_rev"]
    assert parameters(ScriptDirectory._downgrade_revs) == ["self", "destination", "current_rev"]


def test_environment_context_configure_is_a_method_taking_keywords() -> None:
    from alembic.runtime.environment import EnvironmentContext

    found = inspect.signature(EnvironmentContext.configure).parameters
    assert "connection" in found and "target_metadata" in found
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in found.values())


def test_migration_context_keeps_its_version_callbacks_in_a_list_it_iterates() -> None:
    from alembic.runtime.migration import MigrationContext

    assert "on_version_apply_callbacks" in inspect.getsource(MigrationContext.__init__)
    assert "on_version_apply_callbacks" in inspect.getsource(MigrationContext.run_migrations)


def test_impl_comparison_methods_take_what_the_quick_path_passes() -> None:
    from alembic.ddl.impl import DefaultImpl

    assert parameters(DefaultImpl.compare_type) == ["self", "inspector_column", "metadata_column"]
    assert parameters(DefaultImpl.autogen_column_reflect) == [
        "self",
        "inspector",
        "table",
        "column_info",
    ]
    assert parameters(DefaultImpl.compare_server_default)[:5] == [
        "self",
        "inspector_column",
        "metadata_column",
        "rendered_metadata_default",
        "rendered_inspector_default",
    ]


def test_sqlalchemy_private_attributes_the_quick_path_reads() -> None:
    from sqlalchemy import Column, Integer, MetaData, String, Table, text

    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("x", String))
    assert table._autoincrement_column is table.c.id
    assert text("now()")._bindparams == {}
    assert text("x = :y")._bindparams
    assert Integer()._type_affinity is Integer


@pytest.mark.parametrize("isolated", [True, False])
def test_add_constraint_still_isolates_unless_told_not_to(isolated: bool) -> None:
    """`AddConstraint(isolate_from_table=...)` (SQLAlchemy 2.0.39+); older versions always set
    the private `_create_rule`, which `add_constraint_ddl` then restores."""
    from sqlalchemy import Column, Integer, MetaData, Table, UniqueConstraint
    from sqlalchemy.schema import AddConstraint

    constraint = UniqueConstraint("x", name="uq_x")
    Table("t", MetaData(), Column("x", Integer), constraint)
    assert hasattr(constraint, "_create_rule")
    AddConstraint(constraint, isolate_from_table=isolated)
    assert (constraint._create_rule is not None) is isolated


def test_the_wrappers_work_on_this_alembic() -> None:
    """The named functions themselves, on the installed versions."""
    from sqlalchemy import Column, Integer, MetaData, Table, UniqueConstraint, text

    from tasks.core import alembic_internals

    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("x", Integer))
    constraint = UniqueConstraint("x", name="uq_x")
    table.append_constraint(constraint)
    assert alembic_internals.autoincrement_column(table) is table.c.id
    assert alembic_internals.type_affinity(Integer()) is Integer
    assert not alembic_internals.has_bind_parameters(text("now()"))
    ddl = alembic_internals.add_constraint_ddl(constraint)
    assert ddl.element is constraint
    assert constraint._create_rule is None  # the model's constraint is still created inline


def test_history_lines_mark_current_as_alembic_does() -> None:
    """`Script._db_current_indicator` still makes `cmd_format` print "(current)"."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from tasks.core.alembic_internals import history_line
    from tests.conftest import ROOT

    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    first = script.get_revision("299ef84b3388")
    assert "(current)" in history_line(first, current=True, verbose=False)
    assert "(current)" not in history_line(first, current=False, verbose=False)


def test_the_user_default_comparator_is_registered_where_the_guard_wraps_it() -> None:
    import alembic.autogenerate  # noqa: F401
    from alembic.runtime.plugins import _all_plugins

    from tasks.core.alembic_internals import guard_user_default_comparison

    guard_user_default_comparison()
    registry = _all_plugins["alembic.autogenerate.defaults"].autogenerate_comparators._registry
    wrapped = [
        fn
        for entries in registry.values()
        for fn, _subgroup in entries
        if fn.__name__ == "_user_compare_server_default"
    ]
    assert wrapped and all(getattr(fn, "_tasks_guarded", False) for fn in wrapped)
    assert parameters(wrapped[0])[:7] == [
        "autogen_context", "alter_column_op", "schema", "tname", "cname", "conn_col",
        "metadata_col",
    ]  # fmt: skip
