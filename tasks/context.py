"""Running a task inside the shared context: settings, log, ownership, errors -> exit codes.

This is the one place where Invoke meets the core. `run_task` resolves the environment the
task's collection names, opens the run log before touching a database, applies the ownership
policy, hands a Session to the core operation, and turns whatever it raises into one line on
stderr and a documented exit code. Nothing else in the project calls `sys.exit` or `Exit`.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

from invoke import Context, Exit

from tasks.confirmation import Confirmer
from tasks.environments import resolve_environment
from tasks.errors import ExitCode, MigrationsError
from tasks.ownership import current_operator, policy_applies, require_owner
from tasks.redaction import redact
from tasks.run_log import RunLog, RunRecord
from tasks.session import Session
from tasks.settings import COLLECTIONS, settings_from_mapping


def run_task(
    c: Context,
    collection: str,
    task: str,
    arguments: dict[str, Any],
    operation: Callable[[Session], Any],
    *,
    changes_database: bool,
    creates_revision: bool = False,
    assume_yes: bool = False,
) -> None:
    """Run `operation` for `collection.task` and exit with its documented code."""
    name = f"{collection}.{task}"
    record = RunRecord(environment=COLLECTIONS[collection], task=name, arguments=arguments)
    started = time.perf_counter()
    log: RunLog | None = None
    try:
        settings = settings_from_mapping(c.config.migrations)
        log = RunLog(settings.log_file)
        record.operator = current_operator()
        environment = resolve_environment(settings, record.environment)
        record.database = environment.masked_url
        log.started(record)
        if policy_applies(
            record.environment, changes_database=changes_database, creates_revision=creates_revision
        ):
            require_owner(settings.owners, record.operator, name)
        session = Session(settings, environment, record, Confirmer(assume_yes=assume_yes))
        operation(session)
    except MigrationsError as error:
        _finish(log, record, started, error.outcome, str(error))
        raise Exit(_one_line(f"{name}: {error}"), code=int(error.exit_code)) from None
    except KeyboardInterrupt:
        _finish(log, record, started, "failed", "interrupted")
        raise Exit(f"{name}: interrupted", code=130) from None
    except Exception as error:  # a bug or an unforeseen failure: one line here, details in the log
        detail = f"{type(error).__name__}: {error}"
        record.details["traceback"] = traceback.format_exc()
        _finish(log, record, started, "failed", detail)
        raise Exit(
            _one_line(f"{name}: unexpected error: {detail}"), code=int(ExitCode.FAILED)
        ) from None
    else:
        _finish(log, record, started, "ok", None)
    finally:
        if log is not None:
            log.close()


def _finish(
    log: RunLog | None, record: RunRecord, started: float, outcome: str, error: str | None
) -> None:
    if log is None:
        return
    duration_ms = (time.perf_counter() - started) * 1000
    log.finished(record, outcome=outcome, duration_ms=duration_ms, error=error)


def _one_line(message: str) -> str:
    return " ".join(redact(message).split())
