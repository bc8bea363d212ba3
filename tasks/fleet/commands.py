"""The fleet's commands: status, plan, upgrade, downgrade and check over every target.

Each is a short function over `tasks.fleet.targets` (targets, scheduling) and
`tasks.migrate.commands` (the
same operations a single environment runs), returning a report the task layer prints and turns
into an exit code. Nothing here imports Invoke.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from tasks.core.confirmation import Confirmer
from tasks.core.console import Console, plural
from tasks.core.errors import DifferencesFound, ExitCode, MigrationsError, UsageError
from tasks.core.run_log import RunRecord
from tasks.core.session import Session
from tasks.core.settings import Settings
from tasks.fleet.config import DEFAULT_PARALLEL, FleetConfig, fleet_config
from tasks.fleet.targets import (
    AT_GOAL,
    FAILED,
    OK,
    FleetReport,
    FleetRun,
    Target,
    TargetResult,
    check_schedule,
    discover_targets,
    load_shared_state,
    log_report,
    run_targets,
    select_targets,
    summary_line,
)
from tasks.guard.ownership import current_operator, require_owner
from tasks.migrate import commands as migrations
from tasks.migrate.alembic_run import database_heads
from tasks.migrate.scripts import validate_revision


@dataclass(frozen=True)
class Selection:
    """Which fleet and which of its targets a command works on."""

    fleet: str | None = None
    only: tuple[str, ...] = ()
    shard: str | None = None


@dataclass(frozen=True)
class Schedule:
    parallel: int = DEFAULT_PARALLEL
    canary: int = 0
    continue_on_error: bool = False


# --- reading --------------------------------------------------------------------------------


@dataclass
class TargetStatus:
    name: str
    database: str
    revision: list[str] | None
    state: str  # at head, behind, unknown revision, unreachable
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "database": self.database,
            "revision": self.revision,
            "state": self.state,
            "error": self.error,
        }


def status(settings: Settings, selection: Selection, *, parallel: int = 8) -> dict[str, Any]:
    """Each target's revision and where it stands against the scripts' heads (read-only)."""
    fleet, targets = _targets(settings, selection)
    state = load_shared_state(settings, targets)
    return _status_report(settings, fleet, targets, state, parallel)


def _status_report(
    settings: Settings,
    fleet: FleetConfig,
    targets: list[Target],
    state: dict[str, Any],
    parallel: int,
) -> dict[str, Any]:
    heads = set(state["_script"].get_heads())
    known = {revision.revision for revision in state["_script"].walk_revisions()}

    from concurrent.futures import ThreadPoolExecutor

    def read(target: Target) -> TargetStatus:
        database = target.environment.masked_url
        if target.environment.schema:
            database += f" schema {target.environment.schema}"
        try:
            revision = list(read_heads(settings, target, state))
        except MigrationsError as error:
            return TargetStatus(target.name, database, None, "unreachable", _line(error))
        if set(revision) == heads:
            where = "at head"
        elif set(revision) <= known:
            where = "behind"
        else:
            where = "unknown revision"
        return TargetStatus(target.name, database, revision, where)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        rows = list(pool.map(read, targets))
    summary = Counter(",".join(row.revision) or "base" for row in rows if row.revision is not None)
    return {
        "fleet": fleet.name,
        "heads": sorted(heads),
        "targets": [row.as_dict() for row in rows],
        "summary": {
            "by_revision": dict(sorted(summary.items())),
            "by_state": dict(sorted(Counter(row.state for row in rows).items())),
            "total": len(rows),
        },
    }


def read_heads(settings: Settings, target: Target, state: dict[str, Any]) -> tuple[str, ...]:
    """The target's current revision(s), read on a connection of its own (no lock)."""
    record = RunRecord(environment=target.environment.name, task="fleet.read", arguments={})
    session = Session(settings, record, _environment=target.environment, **state)
    with session.connect() as connection:
        return database_heads(connection, session)


def print_status(console: Console, report: dict[str, Any]) -> None:
    targets = report["targets"]
    width = max([len(row["name"]) for row in targets] + [6])
    for row in targets:
        revision = ",".join(row["revision"] or []) or (
            "base" if row["revision"] is not None else ""
        )
        line = f"  {row['name']:<{width}}  {row['state']:<16} {revision}"
        console.line(line + (f"  {row['error']}" if row["error"] else ""))
    states = ", ".join(f"{count} {name}" for name, count in report["summary"]["by_state"].items())
    revisions = ", ".join(
        f"{revision}: {count}" for revision, count in report["summary"]["by_revision"].items()
    )
    console.line(
        f"fleet {report['fleet']}: {plural(report['summary']['total'], 'target')}: "
        f"{states or 'none'}"
        + (f" (by revision: {revisions})" if revisions else "")
        + f"; head {','.join(report['heads']) or 'none'}"
    )


def plan(settings: Settings, selection: Selection, console: Console, rev: str = "head") -> int:
    """What an upgrade would do: targets grouped by current revision, one plan per group."""
    fleet, targets = _targets(settings, selection)
    state = load_shared_state(settings, targets)
    report = _status_report(settings, fleet, targets, state, 8)
    by_name = {target.name: target for target in targets}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    unplanned = 0
    for row in report["targets"]:
        if row["state"] in ("unreachable", "unknown revision"):
            unplanned += 1
            console.line(
                f"  {row['name']}: {row['state']}{': ' + row['error'] if row['error'] else ''}"
            )
            continue
        # One plan per dialect and revision: SQLite and PostgreSQL targets render differently.
        dialect = by_name[row["name"]].environment.dialect
        groups.setdefault((dialect, ",".join(row["revision"]) or "base"), []).append(row)
    run = FleetRun(settings, fleet, console, "plan", {"rev": rev}, changes_database=False)
    run.shared_state = state
    for (dialect, revision), rows in sorted(groups.items()):
        names = ", ".join(row["name"] for row in rows[:5]) + (" ..." if len(rows) > 5 else "")
        console.line(f"{plural(len(rows), 'target')} at {revision} on {dialect} ({names}):")
        target = by_name[rows[0]["name"]]
        outcome = _visible(run, target, lambda s: migrations.plan(s, rev), console)
        if not outcome.ok:
            unplanned += len(rows)
            console.line(f"  plan failed: {outcome.error}")
    return int(ExitCode.FLEET_PARTIAL) if unplanned else 0


def _visible(run: FleetRun, target: Target, operation: Any, console: Console) -> Any:
    """A read-only guarded run whose output is shown (plan), not buffered."""
    from tasks.guard.runner import GuardedRun, TaskSpec

    spec = TaskSpec("fleet", run.task, False)
    record = RunRecord(environment=target.environment.name, task=spec.name, arguments={})
    guarded = GuardedRun(
        spec,
        record,
        environment=target.environment,
        console=console,
        session_defaults=run.shared_state,
    )
    return guarded.execute(run.settings, operation)


# --- changing -------------------------------------------------------------------------------


def upgrade(
    settings: Settings,
    selection: Selection,
    schedule: Schedule,
    console: Console,
    confirmer: Confirmer,
    *,
    rev: str = "head",
    allow_destructive: bool = False,
    lock_timeout: float | None = None,
) -> FleetReport:
    """Every selected target up to `rev`; targets already there are skipped after one read."""
    check_schedule(schedule.parallel, schedule.canary)
    fleet, targets = _targets(settings, selection)
    _require_owner(settings, "fleet.upgrade")
    state = load_shared_state(settings, targets)
    goal = _goal(state["_script"], rev)
    if fleet.protected:
        confirmer.ask(
            f"Upgrade fleet {fleet.name} ({plural(len(targets), 'target')}) to {rev}",
            type_to_confirm=fleet.name,
        )
    arguments = {"rev": rev, "allow_destructive": allow_destructive, **_schedule_kwargs(schedule)}
    run = FleetRun(settings, fleet, console, "upgrade", arguments, lock_timeout=lock_timeout)
    run.shared_state = state

    def work(target: Target) -> TargetResult:
        try:
            before = list(read_heads(settings, target, state))
        except MigrationsError as error:
            return TargetResult(target.name, FAILED, error=_line(error), exit_code=1)
        if goal is not None and set(before) == goal:
            return TargetResult(target.name, AT_GOAL, before, before)
        outcome = run.guarded(
            target,
            lambda s: migrations.upgrade(
                s, rev, backup=fleet.protected, allow_destructive=allow_destructive
            ),
            backup_taken=backups.get(_database_of(target)),
        )
        return _result(target, outcome, before)

    backups = _shared_backups(settings, fleet, targets, console) if fleet.protected else {}
    console.line(f"fleet {fleet.name}: upgrading {plural(len(targets), 'target')} to {rev}")
    report = run_targets(run, targets, work, **_schedule_kwargs(schedule))
    log_report(settings, report, arguments)
    return report


def downgrade(
    settings: Settings,
    selection: Selection,
    schedule: Schedule,
    console: Console,
    confirmer: Confirmer,
    *,
    rev: str,
    backup: bool = True,
    lock_timeout: float | None = None,
) -> FleetReport:
    """Every selected target down to `rev`, after one confirmation for the whole fleet."""
    if not rev:
        raise UsageError("--rev is required: -1, base or a revision id")
    check_schedule(schedule.parallel, schedule.canary)
    fleet, targets = _targets(settings, selection)
    _require_owner(settings, "fleet.downgrade")
    state = load_shared_state(settings, targets)
    validate_revision(state["_script"], rev)
    console.line("WARNING: a downgrade can drop tables and columns and lose their data")
    confirmer.ask(
        f"Downgrade fleet {fleet.name} ({plural(len(targets), 'target')}) to {rev}",
        type_to_confirm=fleet.name if fleet.protected else None,
    )
    arguments = {"rev": rev, "backup": backup, **_schedule_kwargs(schedule)}
    run = FleetRun(settings, fleet, console, "downgrade", arguments, lock_timeout=lock_timeout)
    run.shared_state = state

    backups = _shared_backups(settings, fleet, targets, console) if backup else {}

    def work(target: Target) -> TargetResult:
        outcome = run.guarded(
            target,
            lambda s: migrations.downgrade(s, rev, backup=backup),
            backup_taken=backups.get(_database_of(target)),
        )
        return _result(target, outcome, None)

    report = run_targets(run, targets, work, **_schedule_kwargs(schedule))
    log_report(settings, report, arguments)
    return report


def check(settings: Settings, selection: Selection, console: Console, parallel: int) -> FleetReport:
    """The models against every target's database (read-only): which ones differ."""
    fleet, targets = _targets(settings, selection)
    state = load_shared_state(settings, targets)
    run = FleetRun(settings, fleet, console, "check", {}, changes_database=False)
    run.shared_state = state

    def work(target: Target) -> TargetResult:
        outcome = run.guarded(target, migrations.check)
        if outcome.ok:
            return TargetResult(target.name, OK)
        status = "differs" if outcome.exit_code == int(DifferencesFound("").exit_code) else FAILED
        return TargetResult(target.name, status, error=outcome.error, exit_code=outcome.exit_code)

    return run_targets(run, targets, work, parallel=parallel, continue_on_error=True)


# --- helpers --------------------------------------------------------------------------------


def _targets(settings: Settings, selection: Selection) -> tuple[FleetConfig, list[Target]]:
    fleet = fleet_config(settings, selection.fleet)
    targets = select_targets(
        discover_targets(settings, fleet), only=selection.only, shard=selection.shard
    )
    return fleet, targets


def _database_of(target: Target) -> str | None:
    """The shared database of a schema target (one backup covers all its schemas)."""
    if not target.environment.schema:
        return None
    return target.environment.url.render_as_string(hide_password=False)


def _shared_backups(
    settings: Settings, fleet: FleetConfig, targets: list[Target], console: Console
) -> dict[str | None, Any]:
    """One backup of each database that schema targets share, taken before any of them
    changes (a dump per schema would copy the whole database that many times)."""
    import dataclasses

    from tasks.backup.backups import create_backup

    taken: dict[str | None, Any] = {}
    for target in targets:
        database = _database_of(target)
        if database is None or database in taken:
            continue
        environment = dataclasses.replace(
            target.environment, name=f"{fleet.name}:{target.environment.url.database}", schema=None
        )
        record = RunRecord(environment=environment.name, task="fleet.backup", arguments={})
        session = Session(settings, record, console=console, _environment=environment)
        taken[database] = create_backup(session)
    return taken


def _require_owner(settings: Settings, action: str) -> None:
    """Refuse before any target starts; each target's run checks again on its own."""
    require_owner(settings.owners, current_operator(), action)


def _goal(script: Any, rev: str) -> set[str] | None:
    """The revision ids `rev` names when it names them absolutely (`head`, an id, a label), so
    a target already there is skipped; relative targets (`+1`) depend on each target."""
    if rev == "head" and len(script.get_heads()) > 1:
        raise UsageError("several heads: name the revision to upgrade to (--rev)")
    if rev.startswith(("+", "-")) or "@" in rev:
        return None
    validate_revision(script, rev)
    return {revision.revision for revision in script.get_revisions(rev) if revision is not None}


def _result(target: Target, outcome: Any, before: list[str] | None) -> TargetResult:
    """The target's result from its guarded run: `before` as the run read it, under the lock
    (another runner may have moved the target since the first look)."""
    record = outcome.record
    if record is not None and record.revision_before is not None:
        before = list(record.revision_before)
    after = record.revision_after if record is not None else None
    if outcome.ok:
        status = AT_GOAL if after is not None and before == list(after) else OK
        return TargetResult(target.name, status, before, after)
    return TargetResult(target.name, FAILED, before, after, outcome.error, outcome.exit_code)


def _schedule_kwargs(schedule: Schedule) -> dict[str, Any]:
    return {
        "parallel": schedule.parallel,
        "canary": schedule.canary,
        "continue_on_error": schedule.continue_on_error,
    }


def _line(error: BaseException) -> str:
    from tasks.core.redaction import redact

    return " ".join(redact(str(error) or type(error).__name__).split())


def report_as_dict(report: FleetReport) -> dict[str, Any]:
    return {
        "fleet": report.fleet,
        "action": report.action,
        "interrupted": report.interrupted,
        "results": [result.as_dict() for result in report.results],
        "summary": summary_line(report),
    }
