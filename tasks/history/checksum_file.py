"""The checksum file committed with the history, so an edit to an old revision fails in review.

`invoke dev.checksums --write` writes `checksums.json` beside the revisions (in Alembic's
script_location): each revision's fingerprint (`fingerprints.py`), the same one databases
record when they apply it. `ci.check` compares the files with it: a revision whose fingerprint
changed, or one that was removed, fails the `checksums` check (exit 25) before any database ever
sees the edit. Revisions newer than the file are reported, not failed: the file is refreshed
when they are reviewed, and its diff in the pull request is the reviewer's signal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.ci.checks import Outcome
from tasks.core.alembic_config import alembic_config
from tasks.core.console import plural
from tasks.core.errors import ConfigError, ExitCode
from tasks.history.fingerprints import ALGORITHM, fingerprint

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

    from tasks.core.session import Session

FILE_NAME = "checksums.json"
FORMAT = 1


def file_path(script: ScriptDirectory) -> Path:
    return Path(script.dir) / FILE_NAME


def current_checksums(script: ScriptDirectory) -> dict[str, str]:
    """Every revision's checksum, base first."""
    revisions = reversed(list(script.walk_revisions()))
    return {revision.revision: fingerprint(revision).checksum for revision in revisions}


def write_file(script: ScriptDirectory, checksums: dict[str, str] | None = None) -> Path:
    """Write the file (atomically: a half-written file would fail every later check)."""
    path = file_path(script)
    body = {
        "format": FORMAT,
        "algorithm": f"{ALGORITHM} of the normalised code and identifiers of each revision",
        "written_by": "invoke dev.checksums --write",
        "revisions": checksums if checksums is not None else current_checksums(script),
    }
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def read_file(script: ScriptDirectory) -> dict[str, str] | None:
    """The committed checksums; None when there is no file. A malformed one is an error."""
    path = file_path(script)
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        revisions = body["revisions"]
        if body.get("format") != FORMAT or not isinstance(revisions, dict):
            raise ValueError("unknown format")
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"{path.name}: not a checksum file this version writes ({error}); rewrite it with "
            "`invoke dev.checksums --write`"
        ) from None
    return {str(key): str(value) for key, value in revisions.items()}


def differences(script: ScriptDirectory) -> dict[str, list[str]] | None:
    """{"edited": [...], "removed": [...], "new": [...]} against the file; None without one."""
    committed = read_file(script)
    if committed is None:
        return None
    now = current_checksums(script)
    return {
        "edited": [rev for rev, value in now.items() if committed.get(rev, value) != value],
        "removed": [rev for rev in committed if rev not in now],
        "new": [rev for rev in now if rev not in committed],
    }


def ci_outcomes(session: Session) -> list[Outcome]:
    """`ci.check`'s `checksums` check."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(session.settings))
    found = differences(script)
    if found is None:
        detail = f"no {FILE_NAME} committed (`invoke dev.checksums --write` writes one)"
        return [Outcome("checksums", True, detail, ExitCode.CI_CHECKSUMS)]
    outcomes = [
        Outcome(
            "checksums",
            False,
            f"revision {revision} differs from {FILE_NAME}: it was edited after review "
            "(a new revision instead; or `invoke dev.checksums --write` if the edit is intended)",
            ExitCode.CI_CHECKSUMS,
        )
        for revision in found["edited"]
    ]
    outcomes += [
        Outcome(
            "checksums",
            False,
            f"revision {revision} is in {FILE_NAME} but no longer in the scripts",
            ExitCode.CI_CHECKSUMS,
        )
        for revision in found["removed"]
    ]
    if not outcomes:
        detail = f"{plural(len(read_file(script) or {}), 'revision')} match {FILE_NAME}"
        if found["new"]:
            detail += f"; {plural(len(found['new']), 'newer revision')} not in it yet"
        outcomes.append(Outcome("checksums", True, detail, ExitCode.CI_CHECKSUMS))
    return outcomes


def show(session: Session, script: ScriptDirectory, *, write: bool) -> dict[str, Any]:
    """`dev.checksums`: each revision's checksum and its state against the file; `--write`
    (re)writes the file."""
    if write:
        path = write_file(script)
        count = len(read_file(script) or {})
        session.console.line(f"wrote {path.name}: {plural(count, 'revision')}")
        return {"written": str(path)}
    now = current_checksums(script)
    found = differences(script) or {"edited": [], "removed": [], "new": list(now)}
    for revision, value in now.items():
        state = (
            "EDITED" if revision in found["edited"] else "new" if revision in found["new"] else ""
        )
        session.console.line(f"{revision}  {value[:16]}  {state}".rstrip())
    for revision in found["removed"]:
        session.console.line(f"{revision}  (in {FILE_NAME}, no longer in the scripts)")
    return found
