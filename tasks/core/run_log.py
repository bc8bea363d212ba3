"""The structured run log: one JSON line per task start and finish, appended to a file.

Each line is the event's fields, then `event`, `level` and an ISO 8601 UTC `timestamp`, with
every string masked for secrets last, so nothing written here can carry a password whatever a
caller puts in an event. (This was structlog's processor chain; `import structlog` also
imports rich, a third of Alembic's own start-up, on every task, so the four steps are here.)
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.core.errors import ConfigError
from tasks.core.redaction import redact


@dataclass
class RunRecord:
    """What is known about one task run; the finish event logs all of it."""

    environment: str
    task: str
    arguments: dict[str, Any]
    operator: str | None = None
    host: str = field(default_factory=socket.gethostname)
    user: str = field(default_factory=getpass.getuser)
    database: str | None = None
    revision_before: list[str] | None = None
    revision_after: list[str] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # The full traceback (redacted) of an unexpected error, or of the error behind a one-line one.
    exception: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def fields(self) -> dict[str, Any]:
        fields = asdict(self)
        del fields["started_at"]  # the event's own timestamp says when
        return fields


def _redact_values(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_values(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_values(item) for item in value]
    return value


def render(event: str, level: str, fields: dict[str, Any]) -> str:
    """One log line: the fields, the event, its level and when, secrets masked, as JSON."""
    import json

    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    line = {**fields, "event": event, "level": level, "timestamp": stamp}
    return json.dumps(_redact_values(line), default=str)


class _AppendOnlyLines:
    """The log file: each event one whole line, or nothing at all.

    A line goes out in one `write` on an O_APPEND descriptor (concurrent runners never
    interleave inside a line). When the disk fills part way, the bytes that did land are cut
    off again, so the file never ends in half a JSON line that breaks every reader after it.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)

    def msg(self, message: str) -> None:
        data = (message + "\n").encode()
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            self._cut_partial(data[:written])
            raise

    def _cut_partial(self, landed: bytes) -> None:
        """Remove `landed` from the end of the file, if it is still the end (best effort)."""
        if not landed:
            return
        with contextlib.suppress(OSError):
            end = os.fstat(self._fd).st_size
            if end >= len(landed) and os.pread(self._fd, len(landed), end - len(landed)) == landed:
                os.ftruncate(self._fd, end - len(landed))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class RunLog:
    """An append-only JSON-lines file; opened before any database work, so an unwritable
    log refuses the task instead of losing the record of a change.

    Once the task has started, a failing write (a full disk) must not cost more than the line
    itself: `finished` and `event` never raise, they return or keep what went wrong, and the
    caller reports it in one line (the audit row is written before the finished line).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failure: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = _AppendOnlyLines(path)
        except OSError as error:
            raise ConfigError(f"cannot write the run log {path}: {error.strerror}") from None

    def started(self, record: RunRecord) -> None:
        """The first line; a log that cannot take it refuses the task before any change."""
        try:
            self._file.msg(render("task started", "info", record.fields()))
        except OSError as error:
            raise ConfigError(f"cannot write the run log {self.path}: {error.strerror}") from None

    def finished(
        self, record: RunRecord, *, outcome: str, duration_ms: float, error: str | None
    ) -> str | None:
        """Write the finish line; what went wrong when it could not be written, else None."""
        return self._safely(
            "error" if outcome == "failed" else "info",
            "task finished",
            **record.fields(),
            outcome=outcome,
            duration_ms=round(duration_ms, 1),
            error=error,
        )

    def event(self, name: str, **fields: Any) -> str | None:
        return self._safely("warning", name, **fields)

    def _safely(self, level: str, name: str, **fields: Any) -> str | None:
        try:
            self._file.msg(render(name, level, fields))
        except OSError as error:
            self.failure = f"could not write the run log {self.path}: {error.strerror}"
            return self.failure
        return None

    def close(self) -> None:
        self._file.close()
