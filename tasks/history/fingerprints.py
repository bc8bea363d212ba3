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
import atexit
import difflib
import hashlib
import json
import os
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
    text: str  # the file as it is: records keep it, and a diff normalises both sides


def fingerprint(script: Script) -> Fingerprint:
    """The fingerprint of one Alembic revision script.

    Normalising costs a parse; a file whose exact bytes were fingerprinted before (this run or an
    earlier one, `CACHE`) is looked up by their SHA-256 instead, so checking hundreds of applied
    revisions before every upgrade costs reading them.
    """
    text = Path(script.path).read_text(encoding="utf-8")
    key = hashlib.sha256(text.encode("utf-8")).hexdigest()
    checksum = CACHE.get(key)
    if checksum is None:
        checksum = fingerprint_source(
            text,
            revision=script.revision,
            down_revision=script.down_revision,
            branch_labels=script.branch_labels,
            depends_on=script.dependencies,
        ).checksum
        CACHE.put(key, checksum)
    return Fingerprint(script.revision, checksum, text)


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
    return Fingerprint(revision, digest, text)


def normalised(text: str) -> list[str]:
    """The file's code as the checksum sees it, identifiers included as written, for a diff."""
    tree = ast.parse(text)
    identifiers = [ast.unparse(node) for node in tree.body if _assigns_identifier(node)]
    return [*identifiers, *code_statements(text)]


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
    """The changed lines of two revision files once normalised, `-` old and `+` new, at most
    `lines`."""
    try:
        before = "\n".join(normalised(old)).splitlines()
        after = "\n".join(normalised(new)).splitlines()
    except SyntaxError:
        before, after = old.splitlines(), new.splitlines()
    changed = [
        line
        for line in difflib.unified_diff(before, after, n=0, lineterm="")
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


class _Cache:
    """SHA-256 of a file's bytes -> its checksum, kept between runs in the user's cache folder
    (content-addressed, so it cannot go stale; unreadable or unwritable means recomputing)."""

    LIMIT = 50_000

    def __init__(self) -> None:
        self.entries: dict[str, str] | None = None
        self.dirty = False

    @staticmethod
    def path() -> Path:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "migration-tasks" / f"checksums-{ALGORITHM}-v1.json"

    def _loaded(self) -> dict[str, str]:
        if self.entries is None:
            try:
                entries = json.loads(self.path().read_text(encoding="utf-8"))
                self.entries = entries if isinstance(entries, dict) else {}
            except (OSError, ValueError):
                self.entries = {}
        return self.entries

    def get(self, key: str) -> str | None:
        value = self._loaded().get(key)
        return value if isinstance(value, str) else None

    def put(self, key: str, checksum: str) -> None:
        entries = self._loaded()
        if len(entries) >= self.LIMIT:
            entries.clear()
        entries[key] = checksum
        if not self.dirty:
            self.dirty = True
            atexit.register(self.save)

    def save(self) -> None:
        if not self.dirty or self.entries is None:
            return
        path = self.path()
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(self.entries), encoding="utf-8")
            partial.replace(path)
            self.dirty = False
        except OSError:
            partial.unlink(missing_ok=True)


CACHE = _Cache()
