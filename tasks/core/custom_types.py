"""Autogenerate's `render_item`: a type from the application's own modules gets its import.

Alembic renders such a type as `myapp.types.EncryptedString(length=1000)` and imports nothing,
so the revision fails with a NameError only when it is applied. Used by the project's env.py
options (`tasks.core.alembic_config.context_options`) and, for any env.py, by
`tasks.core.adopted_env`. The hooks carry the comparison's markers (`__tasks_hook__`,
`__wrapped_user__`) so `comparison.merge_env_options` can tell them from a team's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def with_custom_type_imports(project_hook: Callable[..., Any] | None) -> Callable[..., Any]:
    """The project's `render_item` (`migrations.compare.render_item`) first; where it renders
    as usual (returns False), the application's own types still get their import."""
    if project_hook is None or getattr(project_hook, "__tasks_render_item__", False):
        return project_hook or import_custom_types

    def render_item(type_: str, obj: Any, autogen_context: Any) -> Any:
        rendered = project_hook(type_, obj, autogen_context)
        if rendered is False:
            return import_custom_types(type_, obj, autogen_context)
        return rendered

    render_item.__tasks_render_item__ = True  # type: ignore[attr-defined]
    render_item.__wrapped_user__ = project_hook  # type: ignore[attr-defined]
    render_item.__tasks_hook__ = True  # type: ignore[attr-defined]
    return render_item


def import_custom_types(type_: str, obj: Any, autogen_context: Any) -> bool:
    """Autogenerate's `render_item`: a type from the application's own modules gets its import.

    Alembic renders such a type as `myapp.types.EncryptedString(length=1000)` and imports
    nothing, so the revision fails with a NameError only when it is applied. Adding
    `import myapp.types` keeps Alembic's own rendering (False means "render as usual").
    """
    if type_ != "type":
        return False
    module = type(obj).__module__
    # Alembic's own test: sqlalchemy_utils and the like are third-party, they need it too.
    if module in {"builtins", "sqlalchemy"} or module.startswith("sqlalchemy."):
        return False
    prefix = autogen_context.opts.get("user_module_prefix")
    if prefix is not None:
        # Alembic writes `<prefix>EncryptedString(...)`: the prefix's module is what to import.
        module = prefix.rstrip(".")
    if module.replace(".", "").replace("_", "").isalnum():
        autogen_context.imports.add(f"import {module}")
    return False


# Autogenerate's default rendering, not an option a team chose (see merge_env_options).
import_custom_types.__tasks_hook__ = True  # type: ignore[attr-defined]
import_custom_types.__wrapped_user__ = None  # type: ignore[attr-defined]
