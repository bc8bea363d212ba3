"""Small readers of pglast's parse tree shared by the PostgreSQL classifier's modules."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any


def relname(relation: Any) -> str:
    """A relation's name as written, schema-qualified when it is (`audit.people`): a table of
    the same name in another schema is another table. (`SET search_path` needs consent, so an
    unqualified name means the same schema for the whole revision.)"""
    if relation is None:
        return ""
    schema = getattr(relation, "schemaname", None)
    return f"{schema}.{relation.relname}" if schema else relation.relname


def type_name(type_name: Any) -> str:
    """`varchar(50)`, `text`, `int4`: the type's last name and its modifiers."""
    name = type_name.names[-1].sval
    mods = []
    for mod in type_name.typmods or ():
        value = getattr(getattr(mod, "val", None), "ival", None)
        mods.append(str(value) if value is not None else "?")
    suffix = "[]" if type_name.arrayBounds else ""
    return f"{name}({','.join(mods)}){suffix}" if mods else f"{name}{suffix}"


def walk(node: Any) -> Iterator[Any]:
    """Every node below `node` (itself included), depth first."""
    from pglast import ast

    if isinstance(node, (tuple, list)):
        for item in node:
            yield from walk(item)
        return
    if not isinstance(node, ast.Node):
        return
    yield node
    for name in node:  # a pglast Node iterates over its slot names
        yield from walk(getattr(node, name, None))


@functools.lru_cache(maxsize=256)
def parse(text: str) -> Any | None:
    """The one statement in `text`, or None when it does not parse or is not exactly one.

    Cached: splitting, the bookkeeping test and the judge all ask for the same statement's tree
    (the statement guard, on every statement of a run). The classifier only reads trees."""
    from pglast import parse_sql

    try:
        parsed = parse_sql(text)
    except Exception:
        return None
    return parsed[0].stmt if len(parsed) == 1 else None
