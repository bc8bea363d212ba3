"""One JSON shape for every task's `--json` (issue 18.5), described in docs/task-output.schema.json.

Whatever the task, the document is the run as the run log knows it: which command, which
environment and database, how it ended (`ok`, `exit_code`, `error`), the database's revision
before and after, the task's own findings under `details` (the same keys the run log records),
what the operation returned under `result`, and the lines a person would have read under
`output`. Times are ISO 8601. `version` changes only when a key changes meaning.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

from tasks.core.redaction import redact

VERSION = 1


def document(
    command: str,
    *,
    environment: str,
    database: str | None,
    ok: bool,
    exit_code: int,
    error: str | None,
    started_at: datetime,
    revision_before: list[str] | None,
    revision_after: list[str] | None,
    details: dict[str, Any],
    result: Any,
    output: str,
) -> str:
    """The task's JSON document, passwords redacted like every other output."""
    body = {
        "command": command,
        "version": VERSION,
        "environment": environment,
        "database": database,
        "ok": ok,
        "exit_code": exit_code,
        "error": error,
        "started_at": started_at.isoformat(),
        "revision_before": revision_before,
        "revision_after": revision_after,
        "details": details,
        "result": result,
        "output": [line for line in output.splitlines()],
    }
    return redact(json.dumps(_plain(body), indent=2, ensure_ascii=False))


def _plain(value: Any) -> Any:
    """JSON-safe: dataclasses as objects, tuples and sets as lists, times in ISO 8601."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "value") and isinstance(value.value, int | str):  # an Enum
        return value.value
    return str(value)
