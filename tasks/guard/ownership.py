"""The ownership policy: only configured owners create revisions or change shared databases.

The operator is `MIGRATIONS_OPERATOR`, else `git config user.email`. Work on an environment
that is not `shared` (local) is never restricted; with no owners configured nobody is.
"""

from __future__ import annotations

import os
import subprocess

from tasks.core.errors import Refused


def current_operator() -> str | None:
    """Who is running the task, as an e-mail address when one can be found."""
    explicit = os.environ.get("MIGRATIONS_OPERATOR", "").strip()
    if explicit:
        return explicit
    try:
        result = subprocess.run(
            ["git", "config", "user.email"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def policy_applies(shared: bool, *, changes_database: bool, creates_revision: bool) -> bool:
    """Revisions are shared history wherever they are written; local databases are nobody's."""
    if creates_revision:
        return True
    return changes_database and shared


def require_owner(owners: tuple[str, ...], operator: str | None, action: str) -> None:
    """Refuse `action` unless no owners are configured or `operator` is one of them."""
    if not owners:
        return
    if operator and operator.strip().lower() in owners:
        return
    who = operator or "an unidentified operator (set MIGRATIONS_OPERATOR or git user.email)"
    raise Refused(f"{action} is reserved to {', '.join(owners)}; {who} is not an owner")
