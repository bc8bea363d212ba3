"""What people see: readable lines, warnings, and a live progress line on terminals.

Everything printed goes through `Console`, which masks secrets; progress never leaves control
characters in CI logs or pipes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Self

from tasks.core.redaction import redact


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """`1 revision`, `2 revisions`: never `revision(s)`."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


# Words that carry a verdict, coloured on a terminal: red, yellow, green, red.
_COLOURS = {"DESTRUCTIVE": "31", "BLOCKING": "33", "FAILED": "31", "ok": "32"}
_VERDICT = re.compile(r"\b(DESTRUCTIVE|BLOCKING|FAILED)\b|(?<=^  )(ok)\b")


# C0 controls but newline and tab, DEL and C1 (0x9b is a one-byte CSI on some terminals), and
# the bidirectional controls that reorder what a reviewer reads (Trojan Source, CVE-2021-42574).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Inside one value (a message, an operator, a revision id) a line break forges a row too.
_VALUE_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def neutralise(text: str) -> str:
    """Control characters from data (a revision message, an error) made visible: `\\x1b`.

    A message with ESC sequences could otherwise move the cursor and erase or forge lines of
    what a reviewer reads; a `\\r` could overwrite a line. Only the console's own sequences
    (colour, the live line) reach the terminal, and they are added after this.
    """
    return _CONTROL.sub(lambda match: _escape(match.group(0)), text)


def one_value(text: str) -> str:
    """A data value for one cell or one line: every control character, line breaks and tabs
    included, shown as `\\x0a`; letters of any script printed as they are."""
    return _VALUE_CONTROL.sub(lambda match: _escape(match.group(0)), text)


def _escape(character: str) -> str:
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def colour_enabled(stream: IO[str]) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def colourise(text: str) -> str:
    """DESTRUCTIVE, BLOCKING and FAILED anywhere, `ok` opening an indented check line."""

    def paint(match: re.Match[str]) -> str:
        word = match.group(0)
        return f"\x1b[{_COLOURS[word]}m{word}\x1b[0m"

    return _VERDICT.sub(paint, text)


@dataclass
class Console:
    """Readable lines for people: results to stdout, warnings to stderr, secrets masked.

    On a terminal a `Progress` may keep one live status line at the bottom; every other line
    is printed above it, so nothing is overwritten. Without a terminal (CI, pipes) there is
    never a live line: output stays plain, one line per event.
    """

    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    _status: str = ""
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def line(self, text: str = "") -> None:
        text = neutralise(redact(text))
        if colour_enabled(self.stdout):
            text = colourise(text)
        with self._lock:
            self._clear_status()
            _emit(self.stdout, text + "\n")
            self._draw_status()

    def warning(self, text: str) -> None:
        with self._lock:
            self._clear_status()
            _emit(self.stderr, f"WARNING: {neutralise(redact(text))}\n")
            self._draw_status()

    def note(self, text: str) -> None:
        """A remark for a person at a terminal (on stderr); scripts and CI never see it, since
        a successful run's stderr stays empty."""
        try:
            interactive = bool(self.stderr.isatty())
        except (AttributeError, ValueError):
            interactive = False
        if not interactive:
            return
        with self._lock:
            self._clear_status()
            print(neutralise(redact(text)), file=self.stderr, flush=True)
            self._draw_status()

    def is_terminal(self) -> bool:
        try:
            return bool(self.stdout.isatty())
        except (AttributeError, ValueError):
            return False

    def status(self, text: str) -> None:
        """Replace the live status line (terminals only; ignored elsewhere)."""
        if not self.is_terminal():
            return
        with self._lock:
            self._clear_status()
            self._status = neutralise(redact(text))
            self._draw_status()

    def _clear_status(self) -> None:
        """Wipe the live line from the screen; it is kept, to be drawn again below."""
        if self._status:
            _emit(self.stdout, "\r\x1b[K")

    def _draw_status(self) -> None:
        if self._status:
            _emit(self.stdout, self._status)

    def clear_status(self) -> None:
        with self._lock:
            if self._status:
                _emit(self.stdout, "\r\x1b[K")
                self._status = ""


def _emit(stream: IO[str], text: str) -> None:
    """Write and flush; a reader that went away (`| head`) must not stop the task.

    A BrokenPipeError here used to end a task half way (an upgrade between two revisions) with
    "unexpected error: BrokenPipeError", and Python's final flush printed another. Output to a
    closed pipe goes to /dev/null instead; the run log still records everything.
    """
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        _to_devnull(stream)


def _raised_in(traceback: Any, places: tuple[str, ...]) -> bool:
    """Whether any frame of `traceback` is in a file whose path contains one of `places`."""
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename.replace("\\", "/")
        if any(place in filename for place in places):
            return True
        traceback = traceback.tb_next
    return False


def _to_devnull(stream: IO[str]) -> None:
    """Point the stream's descriptor at /dev/null, so later writes and the exit flush succeed."""
    try:
        descriptor = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(descriptor, stream.fileno())
        finally:
            os.close(descriptor)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (a test's buffer): nothing can be written to it anyway


class LiveLine:
    """A status line that ticks on a terminal while a long step runs; nothing elsewhere.

    Subclasses say what the line shows (`_render`); this owns the ticker thread and clears the
    line on the way out. Use as a context manager.
    """

    interval = 1.0

    def __init__(self, console: Console) -> None:
        self.console = console
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.console.is_terminal():
            self._render()
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(2)
        self.console.clear_status()

    def _render(self) -> None:
        raise NotImplementedError

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._render()


class Progress(LiveLine):
    """Progress through a known number of steps (revisions, backup chunks).

    On a terminal: a live line `[3/40] applying <what> 12s` that ticks every second while a
    step runs, then one permanent line per finished step. Elsewhere: only the permanent lines,
    so CI logs stay quiet and line-oriented. Use as a context manager.
    """

    def __init__(self, console: Console, total: int, verb: str = "applying") -> None:
        super().__init__(console)
        self.total = total
        self.verb = verb
        self.done = 0
        self._current = ""
        self._detail = ""
        self._started = time.monotonic()

    def start(self, what: str) -> None:
        """A step begins: the live line names it."""
        self._current = what
        self._started = time.monotonic()
        self._render()

    def detail(self, text: str) -> None:
        """What the running step is doing right now (a backfill's rows and ETA), shown after
        its name on the live line until the step finishes."""
        self._detail = text
        self._render()

    def finish(self, text: str) -> float:
        """The step ended: one permanent line `[n/total] text (1.2 s)`; returns its seconds."""
        self.done += 1
        seconds = time.monotonic() - self._started
        counter = f"[{self.done}/{self.total}] " if self.total else ""
        self.console.clear_status()  # the permanent line takes the live line's place
        self.console.line(f"  {counter}{text} ({seconds:.1f} s)")
        self._current = ""
        self._detail = ""
        self._started = time.monotonic()
        return seconds

    def _render(self) -> None:
        if self._current:
            elapsed = int(time.monotonic() - self._started)
            step = min(self.done + 1, self.total) if self.total else self.done + 1
            counter = f"[{step}/{self.total}] " if self.total else ""
            detail = f" | {self._detail}" if self._detail else ""
            self.console.status(f"  {counter}{self.verb} {self._current} {elapsed}s{detail}")


def quiet_broken_pipes() -> None:
    """What escapes every task reaches the top level as one line, never a traceback.

    Invoke prints the task list and help itself, and loads `-f` files and `invoke.yaml` itself,
    outside any task: a closed pipe (`invoke --list | head`) drops the rest of the output; a
    configuration file Invoke cannot read or merge (bad YAML, not UTF-8, a list where a mapping
    belongs) is one line and exit 2; anything else there is one line and exit 1. `--debug`
    (Invoke's) still shows the traceback first.
    """
    if getattr(sys.excepthook, "quiet_broken_pipes", False):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, traceback: Any) -> None:
        if issubclass(kind, BrokenPipeError):
            _to_devnull(sys.stdout)
            return
        if not issubclass(kind, Exception):  # KeyboardInterrupt, SystemExit: Python's own way
            previous(kind, value, traceback)
            return
        if logging.getLogger("invoke").isEnabledFor(logging.DEBUG):  # Invoke's --debug
            previous(kind, value, traceback)
        configuration = _raised_in(traceback, ("invoke/config.py", "yaml/"))
        what = "cannot load the configuration" if configuration else "unexpected error"
        lines = [line.strip() for line in str(value).splitlines() if line.strip()]
        detail = neutralise(redact(lines[0] if lines else ""))[:300]
        print(f"invoke: {what}: {kind.__name__}: {detail}".rstrip(": "), file=sys.stderr)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(2 if configuration else 1)

    hook.quiet_broken_pipes = True  # type: ignore[attr-defined]
    sys.excepthook = hook
