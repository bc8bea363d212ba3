"""Issue 18.6: one short-flag table in fact. Over the real Invoke collection, every letter
means one long flag on every task that has it (`-f` was --format, --fleet or --file; `-c`
--check or --canary; `-r` --rev or --rev-id; `-d` --dialect or --depends-on; `-l`
--lock-timeout or --limit), and that meaning is the one in SHORT_FLAGS."""

from __future__ import annotations

from collections import defaultdict

from tasks.cli.flags import LONG_NAMES, SHORT_FLAGS
from tasks.cli.namespace import build_namespace


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
