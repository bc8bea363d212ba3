"""Backup files: their directory, a free name, the `.partial` file a dump is written into and
the rename that completes it, and the clean-up of partial files whose writer died.

A backup is written under `<name>.<host>-<pid>.partial` and renamed when complete, so a failed
or killed backup never leaves a file that looks good, and a later run can tell a partial file
still being written (its process is alive) from an abandoned one.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from pathlib import Path

from tasks.backup.tools import BackupError
from tasks.core.errors import ConfigError, UsageError


def safe_name(text: str) -> str:
    """File-name-safe, and short: file systems refuse names over 255 bytes."""
    return (re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "database")[:80]


def backup_directory(directory: Path) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the backup directory {directory}: {error.strerror}"
        ) from None
    return directory


def reserve(wanted: Path) -> tuple[Path, Path]:
    """A free backup path and its `.partial` file, created now. Any OSError on the way (a folder
    without write or search permission, a read-only file system, a name too long) is the
    configuration's problem, said in one line before any tool runs."""
    try:
        path = _free_path(wanted)
    except OSError as error:
        raise ConfigError(
            f"cannot use the backup directory {wanted.parent}: {error.strerror or error}"
        ) from None
    partial = path.with_name(f"{path.name}.{_owner_tag()}.partial")
    _writable(partial)
    return path, partial


def complete(partial: Path, path: Path) -> None:
    """Give the finished backup its real name; a failure here leaves no file that looks good."""
    try:
        partial.replace(path)
    except OSError as error:
        raise BackupError(
            f"cannot rename the backup to {path}: {error.strerror or error}"
        ) from None


def _writable(path: Path) -> None:
    """Create the file now, so an unwritable directory fails before any tool runs."""
    try:
        path.touch(exist_ok=False)
    except OSError as error:
        raise ConfigError(
            f"cannot write to the backup directory {path.parent}: {error.strerror}"
        ) from None


def _free_path(path: Path) -> Path:
    """Two backups in the same second get -2, -3, ... rather than overwriting each other."""
    candidate, number = path, 1
    while candidate.exists() or any(candidate.parent.glob(f"{candidate.name}.*partial")):
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def _owner_tag() -> str:
    """`<host>-<pid>` of this process, written into partial file names so a later run can tell
    a backup still being written from one whose writer died (SIGKILL, OOM, a lost VM)."""
    return f"{safe_name(socket.gethostname())}-{os.getpid()}"


_PARTIAL = re.compile(r"^(?P<final>.+)\.(?P<host>[A-Za-z0-9_.-]+)-(?P<pid>\d+)\.partial$")


def remove_stale_partials(directory: Path) -> list[Path]:
    """Delete the `*.partial` files in `directory` whose writer, on this host, is gone.

    A partial file of a killed backup is as large as the dump got and is never completed.
    Only files named by this tool for this host are judged; a live writer's file, another
    host's (a shared directory), or a name we cannot read is left alone.
    """
    removed = []
    host = safe_name(socket.gethostname())
    for candidate in directory.glob("*.partial"):
        match = _PARTIAL.match(candidate.name)
        if match is None or match["host"] != host or _process_alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def existing_file(path: Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"backup file {path} does not exist")
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"cannot read backup file {path}: permission denied")
    return path.resolve()
