"""Loading the models' MetaData named by `migrations.metadata` (`module:attribute`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tasks.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import MetaData


def load_metadata(import_path: str) -> MetaData:
    """Import `module:attribute`; the attribute is a MetaData or a function returning one.

    Any failure, including an error inside a models module, is a ConfigError naming the path:
    comparing against incomplete models is how revisions that drop tables get written.
    """
    from sqlalchemy import MetaData

    module_name, _, attribute = import_path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"migrations.metadata {import_path!r} must look like 'module:attribute'")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
        metadata = target() if callable(target) and not isinstance(target, MetaData) else target
    except Exception as error:
        raise ConfigError(f"cannot load models from {import_path!r}: {error}") from None
    except SystemExit as exit_:  # a models module that gives up: its text, under the task's name
        raise ConfigError(
            f"cannot load models from {import_path!r}: it called sys.exit({exit_.code!r})"
        ) from None
    if not isinstance(metadata, MetaData):
        raise ConfigError(f"{import_path!r} is not a SQLAlchemy MetaData")
    return metadata
