"""Issue 12.8: the finish. Counted nouns read "1 revision", "2 revisions"; verdict words are
coloured on a terminal (never in pipes, never with NO_COLOR); the README documents shell
completion and the command it names works."""

from __future__ import annotations

import pexpect

from tasks.core.console import colourise, plural
from tests.conftest import ROOT
from tests.helpers import FIRST, assert_ok, sqlite_url, terminal

RED_DESTRUCTIVE = "\x1b[31mDESTRUCTIVE\x1b[0m"


def test_plural():
    assert [plural(n, "revision") for n in (0, 1, 2)] == [
        "0 revisions",
        "1 revision",
        "2 revisions",
    ]


def test_counted_nouns_in_task_output(project, tmp_path):
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(tmp_path / "dev.sqlite3"))

    two = project.invoke("dev.upgrade", "--rev", FIRST)
    assert_ok(two)
    behind = project.invoke("dev.current")
    plan = project.invoke("dev.plan")

    assert "1 revision to apply" in two.stdout
    assert "behind head by 1 revision\n" in behind.stdout
    assert "1 revision to apply" in plan.stdout
    for result in (two, behind, plan):
        assert "(s)" not in result.stdout


def test_verdict_words_are_coloured_only_on_a_terminal(project, tmp_path):
    from tests.revision_chains import empty_chain

    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        "d00000000001", "table", 'op.create_table("t", sa.Column("x", sa.Integer))', record=False
    )
    chain.add("d00000000002", "drop it", 'op.drop_table("t")', record=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(tmp_path / "dev.sqlite3"))
    assert_ok(project.invoke("dev.upgrade", "--rev", "d00000000001"))

    piped = project.invoke("dev.plan")
    child = terminal("dev.plan")
    child.expect(pexpect.EOF)
    child.close()
    coloured = child.before
    project.setenv("NO_COLOR", "1")
    plain_child = terminal("dev.plan")
    plain_child.expect(pexpect.EOF)
    plain_child.close()

    assert "DESTRUCTIVE" in piped.stdout and "\x1b[" not in piped.stdout
    assert RED_DESTRUCTIVE in coloured
    assert "DESTRUCTIVE" in plain_child.before and "\x1b[31m" not in plain_child.before


def test_colourise_marks_verdicts_not_words_inside_text():
    assert colourise("  ok     heads: 1 head") == "  \x1b[32mok\x1b[0m     heads: 1 head"
    assert colourise("  FAILED models") == "  \x1b[31mFAILED\x1b[0m models"
    assert colourise("look ok here; BLOCKINGS") == "look ok here; BLOCKINGS"


def test_readme_documents_shell_completion_and_it_works(project):
    readme = (ROOT / "README.md").read_text()
    assert "invoke --print-completion-script bash" in readme
    assert "zsh" in readme and "fish" in readme

    for shell in ("bash", "zsh", "fish"):
        result = project.invoke_subprocess("--print-completion-script", shell)
        assert result.code == 0, result.output
        assert "invoke" in result.stdout
