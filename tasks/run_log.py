"""The structured run log: one JSON line per task start and finish, appended to a file.

structlog does the rendering (timestamps, JSON) through a processor chain; ours adds the last
processor before rendering, which masks secrets in every string, so nothing written here can
carry a password whatever a caller puts in an event.
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from tasks.errors import ConfigError
from tasks.redaction import redact


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


def _redact_processor(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return _redact_values(event_dict)


class RunLog:
    """An append-only JSON-lines file; opened before any database work, so an unwritable
    log refuses the task instead of losing the record of a change."""

    def __init__(self, path: Path) -> None:
        import structlog

        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] = path.open("a", encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot write the run log {path}: {error.strerror}") from None
        self._logger = structlog.wrap_logger(
            structlog.WriteLogger(self._file),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
                _redact_processor,
                structlog.processors.JSONRenderer(default=str),
            ],
        )

    def started(self, record: RunRecord) -> None:
        self._logger.info("task started", **record.fields())

    def finished(
        self, record: RunRecord, *, outcome: str, duration_ms: float, error: str | None
    ) -> None:
        log = self._logger.error if outcome == "failed" else self._logger.info
        log(
            "task finished",
            **record.fields(),
            outcome=outcome,
            duration_ms=round(duration_ms, 1),
            error=error,
        )

    def event(self, name: str, **fields: Any) -> None:
        self._logger.warning(name, **fields)

    def close(self) -> None:
        self._file.close()
