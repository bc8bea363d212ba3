"""Import every model so `Base.metadata` is complete before anyone compares it with a database.

Autogenerate run with half the models missing writes a revision that drops the other half. The
list of model modules is discovered from the folders, never kept by hand, and a module that fails
to import stops everything with its name instead of silently shrinking the metadata.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from sqlalchemy import MetaData

from database.base import Base

PACKAGE_DIR = Path(__file__).resolve().parent


class ModelImportError(ImportError):
    """A `database/<entity>/models.py` could not be imported."""


def model_modules() -> list[str]:
    """Dotted names of every `database/<entity>/models.py`, in a stable order."""
    return sorted(
        f"{__package__}.{path.parent.name}.models"
        for path in PACKAGE_DIR.glob("*/models.py")
        if not path.parent.name.startswith((".", "_"))
    )


def import_all_models() -> MetaData:
    """Import every models module and return the complete metadata."""
    for module in model_modules():
        try:
            importlib.import_module(module)
        except Exception as error:
            raise ModelImportError(f"cannot import {module}: {error}") from error
    return Base.metadata
