"""Issue 18.3: writing a revision never fails on a missing formatter. With the post-write
hook's module not installed, `merge` and `revision` write and report their file, exit 0, and
say once (per machine) that the hook was skipped."""

from __future__ import annotations

import pytest

from tests.helpers import FIRST, ScriptCopy, assert_ok, copy_scripts

MISSING = "formatter_that_is_not_installed"


@pytest.fixture
def scripts(project, tmp_path) -> ScriptCopy:
    copy = copy_scripts(tmp_path / "scripts")
    text = copy.ini.read_text().replace(".module = ruff", f".module = {MISSING}")
    assert MISSING in text
    copy.ini.write_text(text)
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    return copy


def test_merge_without_the_formatter_writes_the_merge_and_exits_0(project, scripts):
    scripts.add_branch("b0b0b0b0b0b0", down_revision=FIRST)
    before = scripts.files()

    result = project.invoke_subprocess("dev.merge", "-m", "merge a and b")

    assert_ok(result)
    assert "created" in result.stdout
    assert len(scripts.files() - before) == 1
    assert f"module {MISSING!r} is not installed" in result.stderr
    assert result.stderr.count("skipped") == 2  # one line per hook, this first time


def test_the_notice_is_shown_once(project, scripts):
    first = project.invoke_subprocess("dev.revision", "-m", "one", "--empty")
    second = project.invoke_subprocess("dev.revision", "-m", "two", "--empty")

    assert_ok(first)
    assert_ok(second)
    assert "is not installed" in first.stderr
    assert second.stderr == ""
