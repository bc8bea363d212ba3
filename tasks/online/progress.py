"""What a running backfill tells people: rows done, rows per second, time left.

On a terminal one live line is redrawn after every batch; elsewhere (CI, pipes, log files) a
plain line every `every` batches and one at the end, so a log shows the backfill moving without
a line per batch. The tasks attach their console (`attach`), whose live line already names the
revision being applied; plain `alembic` gets stdout.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# Plain lines: one per this many batches (and one when the backfill ends).
DEFAULT_EVERY = 50


@dataclass
class Sink:
    """Where progress goes: `status` replaces a live line (terminals), `line` is permanent."""

    status: Callable[[str], None] | None
    line: Callable[[str], None]
    # The run's record (the tasks' audit arguments and run-log details), when there is one.
    results: list[dict[str, Any]] | None = None


def _stdout_sink() -> Sink:
    stream = sys.stdout
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False

    def status(text: str) -> None:
        stream.write("\r\x1b[K" + text)
        stream.flush()

    def line(text: str) -> None:
        if terminal:
            stream.write("\r\x1b[K")
        stream.write(text + "\n")
        stream.flush()

    return Sink(status=status if terminal else None, line=line)


# Per thread: a fleet migrates several targets at once, each reporting to its own console.
_local = threading.local()


def _attached() -> list[Sink]:
    stack: list[Sink] = _local.__dict__.setdefault("sinks", [])
    return stack


@contextmanager
def attach(sink: Sink) -> Iterator[None]:
    """Send this thread's backfill progress to `sink` for the duration of the block."""
    _attached().append(sink)
    try:
        yield
    finally:
        _attached().remove(sink)


def current_sink() -> Sink:
    stack = _attached()
    return stack[-1] if stack else _stdout_sink()


@dataclass
class BackfillProgress:
    """Counts batches and rows and says so; `estimate` is the table's approximate row count."""

    label: str
    estimate: int | None
    rows_before: int = 0
    every: int = DEFAULT_EVERY
    sink: Sink = field(default_factory=current_sink)
    rows: int = 0
    scanned: int = 0
    batches: int = 0
    _started: float = field(default_factory=time.monotonic)

    def batch_done(self, rows: int, scanned: int) -> None:
        self.rows += rows
        self.scanned += scanned
        self.batches += 1
        text = self.describe()
        if self.sink.status is not None:
            self.sink.status(text)
        elif self.batches % self.every == 0:
            self.sink.line(text)

    def describe(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = self.scanned / elapsed
        done = self.rows_before + self.rows
        parts = [f"backfill {self.label}: {done:,} rows", f"{rate:,.0f} rows/s"]
        if self.estimate and rate > 0:
            left = max(self.estimate - self.scanned - self.rows_before, 0)
            parts.append(f"ETA {format_seconds(left / rate)}")
        return ", ".join(parts)

    def finished(self, resumed: bool) -> float:
        seconds = time.monotonic() - self._started
        total = self.rows_before + self.rows
        how = f" (resumed after {self.rows_before:,} rows)" if resumed else ""
        self.sink.line(
            f"backfill {self.label}: done, {total:,} rows in {self.batches:,} batches, "
            f"{format_seconds(seconds)}{how}"
        )
        return seconds


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
