"""Issue 18.6: one short-flag table in fact. Over the real Invoke collection, every letter
means one long flag on every task that has it (`-f` was --format, --fleet or --file; `-c`
--check or --canary; `-r` --rev or --rev-id; `-d` --dialect or --depends-on; `-l`
--lock-timeout or --limit), and that meaning is the one in SHORT_FLAGS.

Issue 11, item 1: a short flag a task does not have is silently taken by Invoke itself.
`invoke prod.upgrade -r REV` used to hand REV to Invoke's own `-r/--search-root`; the upgrade then
ran to head. Every task's flags are checked here against Invoke's core flags, and across sibling
tasks, by walking the namespace the CLI builds and parsing with the parser the CLI uses.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from invoke import Program
from invoke.parser import Argument, Parser, ParserContext

from tasks.cli.flags import LONG_NAMES, SHORT_FLAGS
from tasks.cli.namespace import build_namespace
from tests.conftest import schema_snapshot
from tests.helpers import FIRST, HEAD, assert_ok, version_rows


def letters() -> dict[str, set[str]]:
    """letter -> the long flags (first long name) it stands for, across every task."""
    meanings: dict[str, set[str]] = defaultdict(set)
    for context in build_namespace().to_contexts():
        for argument in context.args.values():
            longs = [name for name in argument.names if len(name) > 1]
            for short in (name for name in argument.names if len(name) == 1):
                meanings[short].add(longs[0])
    return meanings


def test_every_letter_has_one_meaning_across_all_tasks():
    several = {letter: sorted(longs) for letter, longs in letters().items() if len(longs) > 1}
    assert several == {}


def test_the_letters_are_the_table():
    table = {letter: name.replace("_", "-") for name, letter in SHORT_FLAGS.items()}
    assert len(table) == len(SHORT_FLAGS), "SHORT_FLAGS gives one letter to two flags"
    assert {letter: next(iter(longs)) for letter, longs in letters().items()} == table


def test_renamed_flags_keep_their_old_names():
    """`--rev-id`, `--limit`, `--fleet`, ... still work as aliases of their new first name."""
    found = {
        tuple(argument.names)
        for context in build_namespace().to_contexts()
        for argument in context.args.values()
    }
    for parameter, primary in LONG_NAMES.items():
        old = parameter.replace("_", "-")
        assert any(names[:2] == (primary, old) for names in found), (primary, old)


def _core_arguments() -> list[Argument]:
    """Invoke's own flags: those valid before any task name and, by design, after it too."""
    program = Program()
    return [*program.core_args(), *program.task_args()]


def _core_shorts() -> set[str]:
    return {name for argument in _core_arguments() for name in argument.names if len(name) == 1}


def _task_contexts() -> list[ParserContext]:
    return build_namespace().to_contexts()


def _long(argument: Argument) -> str:
    return next(name for name in argument.names if len(name) > 1)


def _shorts(argument: Argument) -> list[str]:
    return [name for name in argument.names if len(name) == 1]


def _task_shorts(context) -> set[str]:  # type: ignore[no-untyped-def]
    """Letters the task owns: what it owns, Invoke cannot take (fleet.upgrade's -c is
    --canary; --continue-on-error, which starts with c too, is then long-only)."""
    return {name for argument in context.args.values() for name in _shorts(argument)}


def _parse(*argv: str) -> tuple[dict, dict]:
    """(core flags given, task flags given) for `invoke ARGV...`, parsed as the CLI parses."""
    parser = Parser(initial=ParserContext(args=_core_arguments()), contexts=_task_contexts())
    core, task = parser.parse_argv(list(argv))
    given = lambda context: {k: a.value for k, a in context.args.items() if a.got_value}  # noqa: E731
    return given(core), given(task)


def test_the_walk_sees_invokes_core_flags_and_every_task() -> None:
    """Guards the guard: the walk below must see -r and -f as core flags and all the tasks."""
    assert {"r", "f", "c", "l", "d", "h"} <= _core_shorts()
    names = {context.name for context in _task_contexts()}
    assert {"prod.upgrade", "dev.downgrade", "staging.stamp", "local.restore", "ci.check"} <= names


def test_no_flag_whose_letter_invoke_owns_is_left_to_invoke() -> None:
    """A long flag starting with a letter Invoke uses as a short flag must own that letter.

    Except `-h`: Invoke's help runs no task, so `revision --head` may leave it to Invoke rather
    than take `invoke dev.revision -h` away from people asking for help."""
    core = _core_shorts() - {"h"}
    missing = [
        f"{context.name} --{_long(argument)} (-{_long(argument)[0]} is Invoke's)"
        for context in _task_contexts()
        for argument in context.args.values()
        if _long(argument)[0] in core and _long(argument)[0] not in _task_shorts(context)
    ]
    assert missing == []


def test_every_short_flag_reaches_its_task() -> None:
    """Parsed the way the CLI parses: the value lands in the task, never in Invoke's flags."""
    for context in _task_contexts():
        for argument in context.args.values():
            for short in _shorts(argument):
                value = [] if argument.kind is bool else ["1" if argument.kind is int else "value"]
                core, task = _parse(context.name, f"-{short}", *value)
                assert core == {}, f"{context.name} -{short} went to Invoke: {core}"
                assert _long(argument) in task, f"{context.name} -{short} did not reach the task"


def test_sibling_tasks_agree_on_short_flags() -> None:
    """A long flag has the same short flag (or none) on every task that has it."""
    shorts: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    where: dict[str, list[str]] = defaultdict(list)
    for context in _task_contexts():
        for argument in context.args.values():
            shorts[_long(argument)].add(tuple(_shorts(argument)))
            where[_long(argument)].append(f"{context.name}={_shorts(argument)}")
    disagreeing = {flag: where[flag] for flag, seen in shorts.items() if len(seen) > 1}
    assert disagreeing == {}


def test_every_task_taking_rev_accepts_r() -> None:
    tasks_with_rev = [
        context
        for context in _task_contexts()
        if any(_long(argument) == "rev" for argument in context.args.values())
    ]
    assert {context.name for context in tasks_with_rev} >= {
        "prod.upgrade",
        "prod.downgrade",
        "prod.stamp",
        "dev.upgrade",
        "dev.downgrade",
        "dev.stamp",
        "prod.plan",
        "prod.preflight",
    }
    for context in tasks_with_rev:
        core, task = _parse(context.name, "-r", FIRST)
        assert (core, task) == ({}, {"rev": FIRST}), context.name


def test_consents_have_no_short_flag() -> None:
    """--allow-destructive is typed out; no stray letter (it was -a on preflight) implies it."""
    for context in _task_contexts():
        for argument in context.args.values():
            if _long(argument) in {"allow-destructive", "sql"}:
                assert _shorts(argument) == [], f"{context.name} --{_long(argument)}"


def test_upgrade_r_stops_at_the_revision_on_the_real_database(project, dev_on_both: str) -> None:
    """The reported failure: `-r FIRST --yes` went to head. It must stop at FIRST."""
    assert_ok(project.invoke("dev.upgrade", "-r", FIRST, "-y"))
    assert version_rows(schema_snapshot(dev_on_both)) == [FIRST]
    assert_ok(project.invoke("dev.upgrade", "-r", HEAD, "-y", "-l", "5"))
    assert version_rows(schema_snapshot(dev_on_both)) == [HEAD]


def test_downgrade_and_stamp_take_r(project, dev_on_both: str) -> None:
    assert_ok(project.invoke("dev.upgrade", "-r", HEAD))
    assert_ok(project.invoke("dev.downgrade", "-r", "-1", "-y"))
    assert version_rows(schema_snapshot(dev_on_both)) == [FIRST]
    assert_ok(project.invoke("dev.stamp", "-r", HEAD, "-y"))
    assert version_rows(schema_snapshot(dev_on_both)) == [HEAD]


@pytest.mark.mysql
def test_upgrade_r_stops_at_the_revision_on_mariadb(project, mysql_url: str) -> None:
    project.setenv("DATABASE_URL_DEVELOPMENT", mysql_url)
    assert_ok(project.invoke("dev.upgrade", "-r", FIRST, "-y"))
    assert version_rows(schema_snapshot(mysql_url)) == [FIRST]
