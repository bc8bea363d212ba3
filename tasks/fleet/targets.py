"""One command across many databases: tenants, shards, schema-per-tenant.

A fleet (`migrations.fleets.<name>`) is a list of targets, each an `Environment` of its own:
URLs written in the configuration or a file, tenant URLs or names read from a catalog database,
or the schemas of one database that match a pattern. Every target runs through the same
`GuardedRun` as a single task (its own lock, audit row and run-log line), on one process with
bounded parallelism: the revision scripts and the models are read once for all of them, and
Alembic's proxies are made per thread (`tasks.core.alembic_internals`).

Scheduling: targets start in name order, at most `parallel` at a time; `canary` runs the first
K alone and the rest only if all K succeed; the first failure stops new targets from starting
unless `continue_on_error`; targets already running finish. A re-run resumes: targets already at
the goal are read (no lock, no audit row) and skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.confirmation import Confirmer
from tasks.core.console import Console, plural
from tasks.core.environments import Environment, normalize_url, read_dotenv
from tasks.core.errors import ConfigError, DatabaseError, ExitCode, UsageError
from tasks.core.run_log import RunLog, RunRecord
from tasks.core.session import Session
from tasks.core.settings import Settings
from tasks.fleet.config import DEFAULT_PARALLEL, FleetConfig
from tasks.guard.ownership import current_operator
from tasks.guard.runner import GuardedRun, RunOutcome, TaskSpec

_VARIABLE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")

# What a finished target reports.
OK, FAILED, AT_GOAL, NOT_STARTED = "ok", "failed", "at head", "not started"


# --- targets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str  # printable: a schema or database name with control characters is escaped
    environment: Environment

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", printable(self.name))


def printable(name: str) -> str:
    """A name as it can be shown on one line: a newline or an escape sequence in a schema or
    database name must not forge or erase lines of the fleet's report."""
    if name.isprintable():
        return name
    return name.encode("unicode_escape").decode("ascii")


def discover_targets(settings: Settings, fleet: FleetConfig) -> list[Target]:
    """Every target of the fleet, named and sorted; two targets of one name are an error."""
    targets: list[Target] = []
    for index, raw in enumerate(fleet.urls):
        targets.append(_url_target(settings, fleet, raw, f"fleets.{fleet.name}.urls[{index}]"))
    if fleet.urls_file is not None:
        targets.extend(_file_targets(settings, fleet, settings.path(fleet.urls_file)))
    if fleet.query is not None:
        targets.extend(_query_targets(settings, fleet, fleet.query))
    if fleet.schemas is not None:
        targets.extend(_schema_targets(settings, fleet, fleet.schemas))
    names: dict[str, Target] = {}
    for target in targets:
        if target.name in names:
            raise ConfigError(
                f"fleet {fleet.name}: two targets are named {target.name!r} "
                f"({names[target.name].environment.masked_url}, {target.environment.masked_url})"
            )
        names[target.name] = target
    return [names[name] for name in sorted(names)]


def _url_target(
    settings: Settings, fleet: FleetConfig, raw: str, where: str, name: str | None = None
) -> Target:
    value = _expand(settings, fleet, raw, where)
    url = normalize_url(value, where, settings.root)
    if name is None:
        database = url.database or ""
        name = Path(database).stem if url.get_backend_name() == "sqlite" else database
    if not name:
        raise ConfigError(f"{where}: the URL names no database")
    return Target(name, _environment(fleet, name, url, where))


def _file_targets(settings: Settings, fleet: FleetConfig, path: Path) -> list[Target]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ConfigError(f"fleets.{fleet.name}.urls_file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"fleets.{fleet.name}.urls_file {path}: not UTF-8 text") from None
    targets = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if text:
            targets.append(_url_target(settings, fleet, text, f"{path.name}:{number}"))
    return targets


def _query_targets(
    settings: Settings, fleet: FleetConfig, query: Mapping[str, str]
) -> list[Target]:
    """Rows of the catalog's query: full URLs, or database names on the catalog's server."""
    from sqlalchemy import text

    from tasks.core.engines import connect

    where = f"fleets.{fleet.name}.query"
    catalog = _variable_environment(settings, fleet, query["url_variable"], where)
    with connect(catalog, settings.connect_timeout) as connection:
        try:
            rows = [row[0] for row in connection.execute(text(query["sql"]))]
        except Exception as error:
            from tasks.core.engines import describe_database_error

            raise DatabaseError(f"{where}.sql failed: {describe_database_error(error)}") from None
    targets = []
    for value in rows:
        value = str(value or "").strip()
        if not value:
            continue
        if "://" in value:
            targets.append(_url_target(settings, fleet, value, f"{where} row"))
        else:
            url = catalog.url.set(database=value)
            targets.append(Target(value, _environment(fleet, value, url, f"{where} row")))
    return targets


def _schema_targets(
    settings: Settings, fleet: FleetConfig, schemas: Mapping[str, str]
) -> list[Target]:
    """Schema-per-tenant: each schema matching `like` in one PostgreSQL database."""
    from sqlalchemy import text

    from tasks.core.engines import connect

    where = f"fleets.{fleet.name}.schemas"
    database = _variable_environment(settings, fleet, schemas["url_variable"], where)
    if database.dialect != "postgresql":
        raise ConfigError(f"{where}: schema-per-tenant fleets need PostgreSQL")
    sql = (
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE :pattern "
        "AND nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' ORDER BY nspname"
    )
    with connect(database, settings.connect_timeout) as connection:
        names = [row[0] for row in connection.execute(text(sql), {"pattern": schemas["like"]})]
    return [
        Target(name, _environment(fleet, name, database.url, where, schema=name)) for name in names
    ]


def _variable_environment(
    settings: Settings, fleet: FleetConfig, variable: str, where: str
) -> Environment:
    raw = _variable(settings, fleet, variable)
    if raw is None:
        raise ConfigError(f"{variable} is not set ({where}.url_variable)")
    return _environment(fleet, "catalog", normalize_url(raw, variable, settings.root), where)


def _expand(settings: Settings, fleet: FleetConfig, raw: str, where: str) -> str:
    match = _VARIABLE.match(raw.strip())
    if not match:
        return raw
    value = _variable(settings, fleet, match.group(1))
    if value is None:
        raise ConfigError(f"{match.group(1)} is not set ({where})")
    return value


def _variable(settings: Settings, fleet: FleetConfig, variable: str) -> str | None:
    """The process environment first, then `.env.<fleet>` and `.env` (as environments do)."""
    if os.environ.get(variable):
        return os.environ[variable]
    for filename in (f".env.{fleet.name}", ".env"):
        value = read_dotenv(settings.dotenv_dir / filename).get(variable)
        if value:
            return value
    return None


def _environment(
    fleet: FleetConfig, name: str, url: Any, source: str, *, schema: str | None = None
) -> Environment:
    return Environment(
        name=f"{fleet.name}:{printable(name)}",
        url=url,
        url_variable=f"fleets.{fleet.name}",
        source=source,
        protected=fleet.protected,
        shared=True,
        postgres_lock_timeout=fleet.postgres_lock_timeout,
        postgres_statement_timeout=fleet.postgres_statement_timeout,
        schema=schema,
    )


def select_targets(
    targets: list[Target], *, only: Iterable[str] = (), shard: str | None = None
) -> list[Target]:
    """`--only NAMES` (each must exist) and `--shard I/N` (a stable partition, I from 1 to N).

    Given but empty, either is an error, never "no filter": `--only "$TENANTS"` or `--shard
    "$SHARD"` with the variable unset in a CI job must not migrate the whole fleet.
    """
    given = list(only)
    if given:
        known = {target.name for target in targets}
        wanted = [name for item in given for name in _only_names(item, known)]
        if not wanted:
            raise UsageError("--only was given no target name")
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise UsageError(f"--only names no target of this fleet: {', '.join(unknown)}")
        targets = [target for target in targets if target.name in set(wanted)]
    if shard is not None:
        index, count = parse_shard(shard)
        targets = [target for target in targets if shard_of(target.name, count) == index]
    return targets


def _only_names(item: str, known: set[str]) -> list[str]:
    """A value that is a target's whole name is that name (schemas may contain commas);
    otherwise a comma-separated list."""
    if item in known:
        return [item]
    return [name.strip() for name in item.split(",") if name.strip()]


def parse_shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise UsageError(f"--shard must be I/N with 1 <= I <= N (got {text!r})")
    return int(match.group(1)), int(match.group(2))


def shard_of(name: str, count: int) -> int:
    """The shard (1..count) a target belongs to: a hash of its name, so every machine that
    sees the same list agrees without talking to the others, and adding a target moves no
    other one."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


# --- running --------------------------------------------------------------------------------


@dataclass
class TargetResult:
    target: str
    status: str  # ok, failed, at head, not started
    before: list[str] | None = None
    after: list[str] | None = None
    error: str | None = None
    seconds: float = 0.0
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "status": self.status,
            "before": self.before,
            "after": self.after,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class FleetReport:
    fleet: str
    action: str
    results: list[TargetResult] = field(default_factory=list)
    interrupted: bool = False
    stop_code: int = 130  # 143 after SIGTERM, 129 after SIGHUP

    def count(self, status: str) -> int:
        return sum(result.status == status for result in self.results)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return self.stop_code
        if self.count(FAILED):
            return int(ExitCode.FLEET_PARTIAL)
        return 0


@dataclass
class FleetRun:
    """What every target of one fleet command shares: loaded once, handed to each target."""

    settings: Settings
    fleet: FleetConfig
    console: Console
    task: str
    arguments: dict[str, Any]
    changes_database: bool = True
    lock_timeout: float | None = None
    shared_state: dict[str, Any] = field(default_factory=dict)
    operator: str | None = field(default_factory=current_operator)

    def guarded(
        self, target: Target, operation: Callable[[Session], Any], **session: Any
    ) -> RunOutcome:
        """`operation` on one target under the guards of a single task run; `session` adds to
        what every target's Session gets (a backup already taken for it, say)."""
        spec = TaskSpec(
            "fleet",
            self.task,
            self.changes_database,
            assume_yes=True,  # the fleet asked once, before any target started
            lock_timeout=self.lock_timeout,
        )
        record = RunRecord(
            environment=target.environment.name,
            task=spec.name,
            arguments={**self.arguments, "target": target.name},
            operator=self.operator,
        )
        quiet = Console(stdout=io.StringIO(), stderr=io.StringIO())
        run = GuardedRun(
            spec,
            record,
            environment=target.environment,
            console=quiet,
            confirmer=Confirmer(assume_yes=True),
            session_defaults={**self.shared_state, **session},
        )
        return run.execute(self.settings, operation)


def load_shared_state(settings: Settings, targets: Iterable[Target] = ()) -> dict[str, Any]:
    """The scripts and models, read once for the whole fleet and handed to every target.

    Everything a target imports lazily is imported here too, in one thread: two threads that
    import the same package for the first time can see it half-initialised.
    """
    from alembic.script import ScriptDirectory

    from tasks.core import alembic_internals as alembic_threads
    from tasks.core.alembic_config import alembic_config
    from tasks.core.metadata import load_metadata

    alembic_threads.install()
    _import_what_targets_use({target.environment.url for target in targets})
    script = ScriptDirectory.from_config(alembic_config(settings))
    script.revision_map.heads  # noqa: B018 - load every revision file now, in one thread
    # env.py needs the models even to upgrade (target_metadata); load them once, not per target.
    return {"_script": script, "_metadata": load_metadata(settings.metadata)}


def _import_what_targets_use(urls: Iterable[Any]) -> None:
    import importlib

    for module in (
        "sqlalchemy.orm",
        "alembic.autogenerate",
        "alembic.operations",
        "alembic.runtime.environment",
        "alembic.runtime.migration",
        "tasks.guard.audit",
        "tasks.backup.backups",
        "tasks.schema.drift",
        "tasks.guard.lock",
        "tasks.plan.steps",
    ):
        importlib.import_module(module)
    for url in urls:
        dialect = url.get_dialect()
        dialect.import_dbapi()
        with contextlib.suppress(ImportError):  # Alembic has no module of its own for some
            importlib.import_module(f"alembic.ddl.{dialect.name}")


def check_schedule(parallel: int, canary: int) -> None:
    """Before anything is read or printed: the flags that shape the run."""
    if parallel < 1:
        raise UsageError("--parallel must be at least 1")
    if canary < 0:
        raise UsageError("--canary must be 0 or more")


def run_targets(
    run: FleetRun,
    targets: list[Target],
    work: Callable[[Target], TargetResult],
    *,
    parallel: int = DEFAULT_PARALLEL,
    canary: int = 0,
    continue_on_error: bool = False,
) -> FleetReport:
    """Run `work` on each target: canaries first, then the rest, `parallel` at a time."""
    check_schedule(parallel, canary)
    report = FleetReport(run.fleet.name, run.task)
    progress = _FleetProgress(run.console, run.fleet.name, len(targets))
    first, rest = targets[:canary], targets[canary:]
    if first:
        run.console.line(f"fleet {run.fleet.name}: {plural(len(first), 'canary target')} first")
        _schedule(first, work, parallel, False, report, progress)
        if report.count(FAILED) or report.interrupted:
            report.results += [TargetResult(target.name, NOT_STARTED) for target in rest]
            progress.close()
            return report
    _schedule(rest, work, parallel, continue_on_error, report, progress)
    progress.close()
    return report


def _schedule(
    targets: list[Target],
    work: Callable[[Target], TargetResult],
    parallel: int,
    continue_on_error: bool,
    report: FleetReport,
    progress: _FleetProgress,
) -> None:
    queue = list(targets)
    running: dict[Future[TargetResult], Target] = {}
    stopping = False
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="fleet") as pool:
        while queue or running:
            while queue and not stopping and len(running) < parallel:
                target = queue.pop(0)
                running[pool.submit(_safely, work, target)] = target
            if not running:
                break
            try:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM/SIGHUP (Terminated)
                stopping = report.interrupted = True
                report.stop_code = getattr(interrupt, "exit_code", 130)
                progress.say(
                    f"interrupted: {plural(len(running), 'target')} in flight finish, "
                    "no new one starts"
                )
                continue
            for future in done:
                running.pop(future)
                result = future.result()
                report.results.append(result)
                progress.done(result)
                if result.status == FAILED and not continue_on_error:
                    stopping = True
    report.results += [TargetResult(target.name, NOT_STARTED) for target in queue]


def _safely(work: Callable[[Target], TargetResult], target: Target) -> TargetResult:
    """A bug in one target's work is that target's failure, not the fleet's crash."""
    started = time.perf_counter()
    try:
        result = work(target)
    except Exception as error:
        from tasks.core.redaction import redact

        message = " ".join(redact(f"{type(error).__name__}: {error}").split())
        result = TargetResult(target.name, FAILED, error=message, exit_code=1)
    result.seconds = time.perf_counter() - started
    return result


class _FleetProgress:
    """A live line on a terminal (done/total, failures, rate); one line per target elsewhere."""

    def __init__(self, console: Console, fleet: str, total: int) -> None:
        self.console = console
        self.fleet = fleet
        self.total = total
        self.finished = 0
        self.failed = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def done(self, result: TargetResult) -> None:
        with self._lock:
            self.finished += 1
            self.failed += result.status == FAILED
            self.console.line(_result_line(result))
            elapsed = max(time.monotonic() - self.started, 1e-6)
            self.console.status(
                f"fleet {self.fleet}: {self.finished}/{self.total} done, {self.failed} failed, "
                f"{self.finished / elapsed:.1f} targets/s"
            )

    def say(self, text: str) -> None:
        self.console.line(text)

    def close(self) -> None:
        self.console.clear_status()


def _result_line(result: TargetResult) -> str:
    label = {OK: "ok", FAILED: "FAILED", AT_GOAL: "at head", NOT_STARTED: "not started"}
    text = f"  {label.get(result.status, result.status):<11} {result.target}"
    if result.status == OK and result.before != result.after:
        text += f"  {_ids(result.before)} -> {_ids(result.after)}"
    if result.seconds:
        text += f" ({result.seconds:.1f} s)"
    if result.error:
        text += f": {result.error}"
    return text


def _ids(revisions: list[str] | None) -> str:
    return ",".join(revisions) if revisions else "base"


def summary_line(report: FleetReport) -> str:
    counts = [
        f"{report.count(status)} {status}"
        for status in (OK, AT_GOAL, FAILED, NOT_STARTED)
        if report.count(status) or status in (OK, FAILED)
    ]
    return (
        f"fleet {report.fleet} {report.action}: {plural(len(report.results), 'target')}: "
        + ", ".join(counts)
    )


def log_report(settings: Settings, report: FleetReport, arguments: dict[str, Any]) -> None:
    """One run-log event for the fleet run itself, beside each target's own lines."""
    try:
        log = RunLog(settings.log_file)
    except ConfigError:
        return
    try:
        log.event(
            "fleet finished",
            fleet=report.fleet,
            action=report.action,
            arguments=arguments,
            results=[result.as_dict() for result in report.results],
            interrupted=report.interrupted,
        )
    finally:
        log.close()
