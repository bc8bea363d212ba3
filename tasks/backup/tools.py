"""Running the dump and restore tools (pg_dump, pg_restore, psql, mariadb-dump, mariadb):
found on PATH or a one-line error, their progress on the task's live line, their stderr turned
into one masked line, and their lives tied to the task's (a SIGKILLed task takes them along).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from tasks.core.console import Console, LiveLine, plural
from tasks.core.errors import ConfigError, MigrationsError
from tasks.core.redaction import redact

CHUNK = 1 << 16


class BackupError(MigrationsError):
    """A dump or restore tool ran and failed (its first error line, masked, is the message)."""


def find_tool(*names: str) -> str:
    """The first of `names` on PATH; a missing tool is a configuration problem, said plainly."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    package = "postgresql-client" if names[0].startswith(("pg_", "psql")) else "mariadb-client"
    raise ConfigError(
        f"{' or '.join(names)} not found on PATH: install the client tools "
        f"(for example the {package} package) matching the server's version"
    )


def tool_error(tool: str, stderr: str) -> BackupError:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
    first = (errors or lines or ["no error output"])[0]
    return BackupError(f"{Path(tool).name} failed: {redact(first)}")


class BackupProgress(LiveLine):
    """What a running backup has done: tables dumped, bytes written, rate and time elapsed.

    On a terminal a live line ticks (twice a second, so a long table still shows its bytes
    growing); elsewhere one plain line per table, so a CI log shows where a slow backup is. A
    15-second silence before a prompt was the complaint this answers.
    """

    interval = 0.5

    def __init__(self, console: Console, target: Path) -> None:
        super().__init__(console)
        self.target = target
        self.tables = 0
        self.current = ""
        self.started = time.monotonic()
        self._live = console.is_terminal()

    def table(self, name: str) -> None:
        """The dump tool moved on to `name`'s rows."""
        self.tables += 1
        self.current = name
        if self._live:
            self._render()
        else:
            self.console.line(f"  backup: table {self.tables} {name} ({self.summary()})")

    def summary(self) -> str:
        written = self.written()
        elapsed = time.monotonic() - self.started
        rate = written / elapsed if elapsed > 0 else 0.0
        return f"{human_size(written)} written, {human_size(rate)}/s, {elapsed:.0f} s"

    def written(self) -> int:
        try:
            return self.target.stat().st_size
        except OSError:
            return 0

    def _render(self) -> None:
        table = f" ({self.current})" if self.current else ""
        self.console.status(
            f"  backing up: {plural(self.tables, 'table')} done{table}, {self.summary()}"
        )


def run_verbose(
    command: list[str],
    env: dict[str, str],
    progress: BackupProgress,
    on_line: Callable[[str, BackupProgress], None],
) -> None:
    """Run a dump tool with --verbose, turning its per-table lines into progress; the rest of
    its stderr is kept for the error message."""
    process = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        preexec_fn=die_with_task(),
    )
    assert process.stderr is not None
    kept: list[str] = []
    try:
        for line in process.stderr:
            on_line(line.rstrip("\n"), progress)
            kept.append(line)
    except BaseException:  # Ctrl-C, SIGTERM: the dump must not outlive the task's decision
        process.kill()
        raise
    finally:
        process.stderr.close()
        code = process.wait()
    if code != 0:
        raise tool_error(command[0], "".join(kept))


def human_size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def feed(
    command: list[str],
    env: dict[str, str],
    parts: Iterable[bytes | Callable[[IO[bytes]], bool]],
) -> None:
    """Run `command` with stdin made of `parts`: bytes, or writers that stream into stdin and
    return False to abandon (the client then sees end of input without the final part)."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            preexec_fn=die_with_task(),
        )
        assert process.stdin is not None
        try:
            try:
                for part in parts:
                    if callable(part):
                        if not part(process.stdin):
                            break
                    else:
                        process.stdin.write(part)
            except BrokenPipeError:
                pass  # the client stopped on an error; its stderr says which
            finally:
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.close()
            code = process.wait()
        except BaseException:  # interrupted: the client must not finish (commit) without us
            process.kill()
            process.wait()
            raise
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    if code != 0:
        raise tool_error(command[0], stderr)


def die_with_task() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child die with this process, even on SIGKILL.

    Children already share the task's process group, so Ctrl-C and a group-wide SIGTERM reach
    them; a SIGKILL of the task alone would leave pg_dump dumping production, or psql
    committing a restore, after the migration lock was released. Linux's parent-death signal
    closes that gap. Elsewhere (no prctl) None: the group is all we have.
    """
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return None
    prctl = _prctl()  # looked up here: the child between fork and exec does as little as it can
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the task died before prctl took effect
            os._exit(1)

    return in_child


_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., int]:
    """libc's prctl, from the symbols this process already has loaded (`ctypes.util.find_library`
    would run `ldconfig -p` for every dump and restore)."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl
