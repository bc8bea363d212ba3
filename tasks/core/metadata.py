"""Loading the models' MetaData named by `migrations.metadata` (`module:attr.path`).

Applications keep their models in many shapes: a `MetaData`, a declarative `Base` (or a
`registry`) whose `.metadata` is the one to compare, a function that imports every model module
first and returns either, or several of these (Alembic accepts a list of MetaData as
`target_metadata`). All of them resolve here to the one MetaData the tasks compare against.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tasks.core.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import MetaData

FORMS = "a MetaData, a declarative base or registry, a function returning one, or a list of these"


def load_metadata(import_path: str) -> MetaData:
    """Import `module:attr.path` and resolve it to one MetaData.

    Any failure, including an error inside a models module, is a ConfigError naming the path:
    comparing against incomplete models is how revisions that drop tables get written.
    """
    module_name, _, attribute = import_path.partition(":")
    if not module_name.strip() or not attribute.strip():
        raise ConfigError(
            f"migrations.metadata {import_path!r} must look like 'module:attribute' "
            "(for example 'myapp.db:Base.metadata')"
        )
    try:
        target: Any = importlib.import_module(module_name.strip())
    except Exception as error:
        raise ConfigError(f"cannot load models from {import_path!r}: {error}") from None
    except SystemExit as exit_:  # a models module that gives up: its text, under the task's name
        raise _gave_up(import_path, exit_) from None
    walked = module_name.strip()
    for name in attribute.strip().split("."):
        if not hasattr(target, name):
            raise ConfigError(
                f"cannot load models from {import_path!r}: {walked} has no attribute {name!r}"
            )
        target = getattr(target, name)
        walked = f"{walked}.{name}"
    return _resolve(target, import_path)


def _resolve(target: Any, import_path: str, *, called: bool = False) -> MetaData:
    """MetaData as is; `.metadata` of a base or registry; a function's result; a list merged."""
    from sqlalchemy import MetaData

    if isinstance(target, MetaData):
        return target
    if isinstance(target, list | tuple):
        if not target:
            raise ConfigError(f"migrations.metadata {import_path!r} is an empty list")
        return merge_metadata([_resolve(item, import_path, called=called) for item in target])
    if isinstance(getattr(target, "metadata", None), MetaData):
        return target.metadata
    if callable(target) and not isinstance(target, type) and not called:
        try:
            result = target()
        except Exception as error:
            raise ConfigError(f"cannot load models from {import_path!r}: {error}") from None
        except SystemExit as exit_:
            raise _gave_up(import_path, exit_) from None
        return _resolve(result, import_path, called=True)
    found = _describe(target)
    raise ConfigError(f"migrations.metadata {import_path!r} is {found}, not {FORMS}")


def _gave_up(import_path: str, exit_: SystemExit) -> ConfigError:
    return ConfigError(
        f"cannot load models from {import_path!r}: it called sys.exit({exit_.code!r})"
    )


def merge_metadata(parts: list[MetaData]) -> MetaData:
    """Several MetaData as one, for the tasks that walk a single MetaData (sync, check).

    A single part is returned as it is, so the common case keeps its identity (and its naming
    convention). A table several parts define alike (dagster's storages share one) is kept
    once; defined differently it is an error, since which one wins is unknowable.
    """
    from sqlalchemy import MetaData

    unique = list(dict.fromkeys(parts))
    if len(unique) == 1:
        return unique[0]
    merged = MetaData(naming_convention=unique[0].naming_convention)
    for part in unique:
        for table in part.sorted_tables:
            if table.key not in merged.tables:
                table.to_metadata(merged)
            elif _shape(merged.tables[table.key]) != _shape(table):
                raise ConfigError(
                    f"migrations.metadata: table {table.key!r} is defined twice, differently"
                )
    return merged


def _shape(table: Any) -> list[tuple[str, str, bool]]:
    """What two definitions of one table must agree on to be the same table."""
    return [(column.name, repr(column.type), column.nullable) for column in table.columns]


def _describe(value: Any) -> str:
    """What was found, in words: `a str ('x')`, `the class myapp.Thing`, `None`."""
    if value is None:
        return "None"
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"a {type(value).__name__} ({shown})"
