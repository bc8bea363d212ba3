"""Typed errors and the exit codes they become.

Every failure a task can meet is one of these classes; the shared task context turns them into
an exit code and one line on stderr in a single place (`tasks.cli.context`). Keeping the codes here
lets the README, the tests and scripts agree on what a code means.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the operation ran and failed: database error, migration error, unreachable host
    USAGE = 2  # bad input or configuration: missing/malformed URL, unknown revision, bad flag
    REFUSED = 3  # a guard said no: confirmation declined or impossible, not an owner, not at head
    DIFFERENCES = 4  # a check found the models and the database differ
    NEEDS_REVISION = 5  # differences that only a revision or a manual step can resolve
    LOCKED = 6  # another migration held the database's migration lock past --lock-timeout
    LOCK_LOST = 6  # the same code: the lock was lost during the run (its session ended)
    FLEET_PARTIAL = 7  # fleet: some targets failed (the others ran, or were not started)
    # preflight: the first check that failed
    PREFLIGHT_HEADS = 10  # several heads and no explicit target
    PREFLIGHT_UNKNOWN_REVISION = 11  # the database is at a revision the scripts do not know
    PREFLIGHT_DESTRUCTIVE = 12  # pending revisions contain destructive statements
    PREFLIGHT_MODELS = 13  # the models differ from what the migration history builds
    # preflight, upgrade, downgrade: an applied revision's file changed since it was applied
    EDITED_REVISION = 14
    # squash: the baseline does not rebuild what the chain builds (nothing written)
    SQUASH_UNPROVEN = 15
    # ci.check: the first check that failed
    CI_HEADS = 20  # not exactly the allowed number of heads, or an unreachable revision
    CI_DOWNGRADES = 21  # a revision without a real downgrade
    CI_STAIRWAY = 22  # upgrade / downgrade / upgrade failed for a revision
    CI_MODELS = 23  # the models differ from the database the history builds
    CI_LINT = 24  # a revision has lint findings of a failing severity
    CI_CHECKSUMS = 25  # a revision differs from the committed checksum file


class MigrationsError(Exception):
    """Base of every error the tasks report to the operator as one line."""

    exit_code: ExitCode = ExitCode.FAILED
    outcome: str = "failed"


class UsageError(MigrationsError):
    """The operator asked for something that cannot mean anything (unknown revision, bad flag)."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """The configuration or environment is incomplete or malformed (missing URL, bad .env)."""


class Refused(MigrationsError):
    """A guard stopped the task before it changed anything."""

    exit_code = ExitCode.REFUSED
    outcome = "refused"


class LockTimeout(MigrationsError):
    """Another runner kept the migration lock longer than we were willing to wait."""

    exit_code = ExitCode.LOCKED
    outcome = "refused"


class LockLost(MigrationsError):
    """Our migration lock vanished during the run (its session was killed or timed out).

    Another runner may hold it now: the revision in progress is rolled back and the run ends,
    with the lock's exit code, rather than race that runner through the same revisions.
    """

    exit_code = ExitCode.LOCK_LOST


class DatabaseError(MigrationsError):
    """The database could not be reached or rejected a statement (message already masked)."""


class CheckFailed(MigrationsError):
    """A read-only check did not pass; the exit code says which check."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class DifferencesFound(CheckFailed):
    """A read-only comparison found differences; the exit code says which kind."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.DIFFERENCES) -> None:
        super().__init__(message, exit_code)
