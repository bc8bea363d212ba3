"""`ci.check --base REF`: the revisions a change touches, so lint judges only what is new.

A reviewed drop stays in the history for good; linting every revision on every pull request
would keep turning later ones red for it. With a git base (`origin/main`), lint covers the
revision files that differ from it (changed, added, or not yet committed); `ci.since` does the
same by revision id.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.errors import UsageError

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory


def changed_revisions(script: ScriptDirectory, base: str) -> set[str]:
    """Ids of the revisions whose files differ from git `base` (or are untracked)."""
    revisions = [revision for revision in script.walk_revisions() if revision.path]
    folders = sorted({Path(revision.path).resolve().parent for revision in revisions})
    changed: set[Path] = set()
    for folder in folders:
        top = Path(_git(folder, "rev-parse", "--show-toplevel").strip())
        listed = _git(folder, "diff", "--name-only", "--no-renames", base, "--", ".")
        listed += _git(folder, "ls-files", "--others", "--exclude-standard", "--full-name", ".")
        changed |= {(top / line).resolve() for line in listed.splitlines() if line.strip()}
    return {revision.revision for revision in revisions if Path(revision.path).resolve() in changed}


def _git(folder: Path, *argv: str) -> str:
    """git's output in `folder`; a missing git, repository or base is bad input (exit 2)."""
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise UsageError(f"--base: git cannot run: {error}") from None
    if result.returncode != 0:
        problem = " ".join((result.stderr or "").split())[:200] or f"exit {result.returncode}"
        raise UsageError(f"--base: git {argv[0]} failed: {problem}")
    return result.stdout
