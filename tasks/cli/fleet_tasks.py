"""The `fleet` collection: one command across many databases (`migrations.fleets.<name>`).

Each task parses its flags and calls one function of `tasks.fleet.commands`; `run_command`
turns errors and the report's code into the exit.
"""

from __future__ import annotations

import json as json_module
from collections.abc import Callable
from typing import TYPE_CHECKING

from invoke import Context, Task

from tasks.cli.context import run_command
from tasks.cli.flags import flag_task
from tasks.core.console import plural
from tasks.core.settings import Settings

if TYPE_CHECKING:
    from tasks.core.confirmation import Confirmer
    from tasks.core.console import Console
    from tasks.fleet.commands import Schedule, Selection
    from tasks.fleet.targets import FleetReport

FLEET_HELP = "the fleet (migrations.fleets.<name>); optional when only one is configured"
ONLY_HELP = "only these targets (repeat the flag or separate with commas)"
SHARD_HELP = (
    "I/N: this job's stable share of the targets (1 <= I <= N), for N parallel jobs; or "
    "env:VARIABLE/N, the index read from VARIABLE counting from 0 (JOB_COMPLETION_INDEX)"
)
PARALLEL_HELP = "targets migrated at once (default 4)"
LOCK_HELP = "seconds each target waits for another runner's migration lock"


def fleet_tasks() -> list[Task]:
    from tasks.core.console import Console

    def selection(fleet: str, only: list[str], shard: str | None) -> Selection:
        from tasks.fleet.commands import Selection

        return Selection(fleet or None, tuple(only or ()), shard_from_env(shard))

    def schedule(parallel: int, canary: int, continue_on_error: bool) -> Schedule:
        from tasks.fleet.commands import Schedule

        return Schedule(parallel, canary, continue_on_error)

    @flag_task(
        help={"fleet": FLEET_HELP, "only": ONLY_HELP, "shard": SHARD_HELP, "json": "print JSON"},
        iterable=["only"],
    )
    def status(c: Context, fleet: str = "", only: list[str] | None = None, shard: str | None = None,
               json: bool = False) -> None:  # fmt: skip
        """Each target's revision: at head, behind, unknown or unreachable; a summary."""

        def command(settings: Settings) -> int:
            from tasks.fleet import commands as fleet_commands

            report = fleet_commands.status(settings, selection(fleet, only or [], shard))
            if json:  # `command` and `version` as in every task's document (issue 18.5)
                document = {"command": "fleet.status", "version": 1, **report}
                print(json_module.dumps(document, indent=2))
            else:
                fleet_commands.print_status(Console(), report)
            unreachable = report["summary"]["by_state"].get("unreachable", 0)
            return 7 if unreachable else 0

        run_command(c, "fleet.status", command)

    @flag_task(
        help={"fleet": FLEET_HELP, "rev": "target revision (default: head)", "only": ONLY_HELP,
              "shard": SHARD_HELP, "json": "print JSON"},
        iterable=["only"],
    )  # fmt: skip
    def plan(c: Context, fleet: str = "", rev: str = "head", only: list[str] | None = None,
             shard: str | None = None, json: bool = False) -> None:  # fmt: skip
        """Read-only: targets grouped by revision, the SQL and lint of what each group lacks."""

        def command(settings: Settings) -> int:
            import io

            from tasks.fleet import commands as fleet_commands

            captured = io.StringIO() if json else None
            console = Console(stdout=captured) if captured is not None else Console()
            code = fleet_commands.plan(settings, selection(fleet, only or [], shard), console, rev)
            if captured is not None:
                document = {"command": "fleet.plan", "version": 1, "ok": code == 0,
                            "exit_code": code, "rev": rev,
                            "output": captured.getvalue().splitlines()}  # fmt: skip
                print(json_module.dumps(document, indent=2, ensure_ascii=False))
            return code

        run_command(c, "fleet.plan", command)

    @flag_task(
        help=_changing_help(
            rev="target revision (default: head)",
            canary="migrate the first K targets alone; the rest only if all K succeed",
            yes="answer the confirmation (protected fleets); never implies --allow-destructive",
            allow_destructive="apply revisions that drop, retype, rename, tighten or lock",
        ),
        iterable=["only"],
    )
    def upgrade(
        c: Context,
        fleet: str = "",
        rev: str = "head",
        parallel: int = 4,
        canary: int = 0,
        continue_on_error: bool = False,
        only: list[str] | None = None,
        shard: str | None = None,
        yes: bool = False,
        allow_destructive: bool = False,
        lock_timeout: str = "",
        json: bool = False,
    ) -> None:
        """Upgrade every target of the fleet to --rev, in parallel, resuming where it stopped."""

        def command(settings: Settings, console: Console, confirmer: Confirmer) -> FleetReport:
            from tasks.fleet import commands as fleet_commands

            return fleet_commands.upgrade(
                settings,
                selection(fleet, only or [], shard),
                schedule(parallel, canary, continue_on_error),
                console,
                confirmer,
                rev=rev,
                allow_destructive=allow_destructive,
                lock_timeout=_seconds(lock_timeout),
            )

        _run_changing(c, "fleet.upgrade", command, yes=yes, as_json=json)

    @flag_task(
        help=_changing_help(
            rev="required: -1 (one step), base (everything) or a revision id",
            canary="revert the first K targets alone; the rest only if all K succeed",
            yes="answer the confirmation (scripts, CI)",
            backup="--no-backup skips each database's backup (not on protected fleets)",
        ),
        iterable=["only"],
    )
    def downgrade(
        c: Context,
        fleet: str = "",
        rev: str = "",
        parallel: int = 4,
        canary: int = 0,
        continue_on_error: bool = False,
        only: list[str] | None = None,
        shard: str | None = None,
        yes: bool = False,
        backup: bool = True,
        lock_timeout: str = "",
        json: bool = False,
    ) -> None:
        """Revert every target to --rev, after one confirmation (typed name if protected)."""

        def command(settings: Settings, console: Console, confirmer: Confirmer) -> FleetReport:
            from tasks.fleet import commands as fleet_commands

            return fleet_commands.downgrade(
                settings,
                selection(fleet, only or [], shard),
                schedule(parallel, canary, continue_on_error),
                console,
                confirmer,
                rev=rev,
                backup=backup,
                lock_timeout=_seconds(lock_timeout),
            )

        _run_changing(c, "fleet.downgrade", command, yes=yes, as_json=json)

    @flag_task(
        help={"fleet": FLEET_HELP, "only": ONLY_HELP, "shard": SHARD_HELP,
              "parallel": PARALLEL_HELP},
        iterable=["only"],
    )  # fmt: skip
    def check(c: Context, fleet: str = "", only: list[str] | None = None, shard: str | None = None,
              parallel: int = 4) -> None:  # fmt: skip
        """Read-only: the models against every target's database; exit 4 when any differs."""

        def command(settings: Settings) -> int:
            from tasks.fleet import commands as fleet_commands

            console = Console()
            report = fleet_commands.check(
                settings, selection(fleet, only or [], shard), console, parallel
            )
            differs = report.count("differs")
            console.line(
                f"fleet {report.fleet} check: {plural(len(report.results), 'target')}: "
                f"{report.count('ok')} match, {differs} differ, {report.count('failed')} failed"
            )
            if report.count("failed"):
                return 7
            return 4 if differs else 0

        run_command(c, "fleet.check", command)

    return [status, plan, upgrade, downgrade, check]


def _changing_help(**own: str) -> dict[str, str]:
    """The flags upgrade and downgrade share, and each one's own."""
    shared = {
        "fleet": FLEET_HELP,
        "parallel": PARALLEL_HELP,
        "continue_on_error": "keep starting targets after one fails (default: stop)",
        "only": ONLY_HELP,
        "shard": SHARD_HELP,
        "lock_timeout": LOCK_HELP,
        "json": "print the summary as JSON",
    }
    return {**shared, **own}


def _run_changing(
    c: Context,
    name: str,
    command: Callable[[Settings, Console, Confirmer], FleetReport],
    *,
    yes: bool,
    as_json: bool,
) -> None:
    """Run an upgrade or downgrade over the fleet and exit with its report's code."""
    from tasks.core.confirmation import Confirmer

    def run(settings: Settings) -> int:
        console = _progress_console(as_json)
        return _finish(console, command(settings, console, Confirmer(assume_yes=yes)), as_json)

    run_command(c, name, run)


def _progress_console(as_json: bool) -> Console:
    """Per-target lines go to stderr when stdout carries JSON, so the JSON stays parseable."""
    import sys

    from tasks.core.console import Console

    return Console(stdout=sys.stderr) if as_json else Console()


def _finish(console: Console, report: FleetReport, as_json: bool) -> int:
    from tasks.fleet.commands import report_as_dict
    from tasks.fleet.targets import summary_line

    if as_json:
        print(json_module.dumps(report_as_dict(report), indent=2))
    else:
        failed = [result for result in report.results if result.status == "failed"]
        if failed:
            console.line("failed:")
            for result in failed:
                console.line(f"  {result.target}: {result.error}")
        console.line(summary_line(report))
    return report.exit_code


def _seconds(text: str) -> float | None:
    from tasks.core.errors import UsageError

    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--lock-timeout must be a number of seconds (got {text!r})") from None
    if not 0 <= value < float("inf"):
        raise UsageError(f"--lock-timeout must be a number of seconds (got {text!r})")
    return value


def shard_from_env(shard: str | None) -> str | None:
    """`--shard env:VARIABLE/N`: the runner says which job this is. A Kubernetes Indexed Job
    sets JOB_COMPLETION_INDEX (0 .. N-1), a CI matrix any variable it is given; the index from
    0 becomes the share `I/N` with I = index + 1. Anything else passes through unchanged."""
    import os

    from tasks.core.errors import UsageError

    if shard is None or not shard.strip().lower().startswith("env:"):
        return shard
    variable, separator, count = shard.strip()[4:].partition("/")
    variable = variable.strip()
    if not variable or not separator or not count.strip().isdigit() or int(count) < 1:
        raise UsageError(
            f"--shard {shard!r}: write env:VARIABLE/N, e.g. env:JOB_COMPLETION_INDEX/4"
        )
    total = int(count)
    raw = os.environ.get(variable)
    if raw is None or not raw.strip().isdigit() or not 0 <= int(raw) < total:
        found = "is not set" if raw is None else f"is {raw[:20]!r}"
        raise UsageError(
            f"--shard {shard!r}: {variable} {found}; it must hold this job's index, "
            f"0 to {total - 1}"
        )
    return f"{int(raw) + 1}/{total}"
