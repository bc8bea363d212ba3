"""What a revision file says, reduced to what runs: the fingerprint a checksum is taken of.

A revision edited after it ran somewhere makes fresh databases differ from that one, and
Alembic records only the id. The fingerprint is the revision's identifiers and the normalised
source of its code (`ast.unparse` of everything but the module docstring and the imports, with
docstrings removed), so reformatting, comments, the docstring header and reordered imports do
not change it, while any change to what `upgrade()`/`downgrade()` (or a helper they call) does
changes it.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic.script import Script

# Module-level names Alembic reads; their values enter the fingerprint normalised, once.
IDENTIFIERS = ("revision", "down_revision", "branch_labels", "depends_on")
ALGORITHM = "sha256"


@dataclass(frozen=True)
class Fingerprint:
    revision: str
    checksum: str
    source: str  # the normalised text the checksum is taken of (for a diff when it changes)


def fingerprint(script: Script) -> Fingerprint:
    """The fingerprint of one Alembic revision script."""
    return fingerprint_source(
        Path(script.path).read_text(encoding="utf-8"),
        revision=script.revision,
        down_revision=script.down_revision,
        branch_labels=script.branch_labels,
        depends_on=script.dependencies,
    )


def fingerprint_source(
    text: str,
    *,
    revision: str,
    down_revision: Any,
    branch_labels: Any = None,
    depends_on: Any = None,
) -> Fingerprint:
    identifiers = [
        f"revision = {revision!r}",
        f"down_revision = {_ids(down_revision)!r}",
        f"branch_labels = {sorted(_ids(branch_labels))!r}",
        f"depends_on = {sorted(_ids(depends_on))!r}",
    ]
    source = "\n".join([*identifiers, *code_statements(text)]) + "\n"
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    return Fingerprint(revision, digest, source)


def code_statements(text: str) -> list[str]:
    """The module's code, one normalised statement per item: no module docstring, no imports,
    no identifier assignments, no docstrings inside functions and classes."""
    tree = ast.parse(text)
    statements = []
    for index, node in enumerate(tree.body):
        if index == 0 and _is_docstring(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom) or _assigns_identifier(node):
            continue
        statements.append(ast.unparse(_without_docstrings(node)))
    return statements


def short_diff(old: str, new: str, *, lines: int = 12) -> list[str]:
    """The changed lines of two normalised sources, `-` old and `+` new, at most `lines`."""
    changed = [
        line
        for line in difflib.unified_diff(old.splitlines(), new.splitlines(), n=0, lineterm="")
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    if len(changed) > lines:
        changed = [*changed[:lines], f"... {len(changed) - lines} more changed lines"]
    return changed


def _ids(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _assigns_identifier(node: ast.stmt) -> bool:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    names = [target.id for target in targets if isinstance(target, ast.Name)]
    return bool(names) and all(name in IDENTIFIERS for name in names)


def _without_docstrings(node: ast.stmt) -> ast.stmt:
    for inner in ast.walk(node):
        if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = inner.body
            if body and _is_docstring(body[0]):
                inner.body = body[1:] or [ast.Pass()]
    return node
