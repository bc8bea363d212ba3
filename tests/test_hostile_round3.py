"""A hostile user's third pass, on the newest code: one regression test per confirmed break.

Each test states a promise the README or the project standards make and reproduces a break the
third pass found. They are marked `xfail(strict=True)`: each fails today, and the mark must be
removed with the fix (strict makes a fixed break fail the suite until then). Every test runs the
tasks the way a user does (Invoke's CLI, in process) on real databases.
"""

from __future__ import annotations

import pytest

from tasks.errors import ExitCode
from tests.revision_chains import Chain, empty_chain

# --- review formats: what a pull-request comment renders -------------------------------------

HOSTILE_MESSAGE = "add users\n```\n<img src=x onerror=alert(1)>\n# Approved, merge now"


def chain_with_message(project, message: str, revision: str = "a00000000001") -> Chain:  # type: ignore[no-untyped-def]
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        revision,
        message,
        'op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))',
        record=False,
    )
    return chain


@pytest.mark.xfail(
    strict=True, reason="plan_markdown puts the raw message (newlines, fences, HTML) in the heading"
)
def test_plan_markdown_keeps_a_hostile_message_inside_its_heading(project, sqlite_url):
    chain_with_message(project, HOSTILE_MESSAGE)
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url)

    result = project.invoke("dev.plan", "--format", "markdown")

    assert result.code == ExitCode.OK, result.output
    lines = result.stdout.splitlines()
    assert not any(line.startswith("# Approved") for line in lines), result.stdout
    assert "<img" not in result.stdout, result.stdout
    assert sum(line.startswith("```") for line in lines) % 2 == 0, result.stdout


@pytest.mark.xfail(
    strict=True,
    reason="_mermaid_text keeps newlines and backticks: a fence closes the ```mermaid block",
)
def test_mermaid_history_keeps_a_hostile_message_inside_its_label(project, sqlite_url):
    chain_with_message(project, 'x\n```\n# heading\n    click r_a00000000001 href "https://evil"')
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url)

    result = project.invoke("dev.history", "--graph", "--format", "mermaid")

    assert result.code == ExitCode.OK, result.output
    assert "```" not in result.stdout, result.stdout
    node_lines = [line for line in result.stdout.splitlines() if line.startswith("    ")]
    assert len(node_lines) == 1, result.stdout  # one revision, one line: its label stays in it


@pytest.mark.xfail(strict=True, reason="_mermaid_id maps a.b and a_b to one node id r_a_b")
def test_mermaid_history_draws_two_revisions_as_two_nodes(project, sqlite_url):
    chain = chain_with_message(project, "first", revision="a.b")
    chain.add("a_b", "second", "pass", record=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url)

    result = project.invoke("dev.history", "--graph", "--format", "mermaid")

    assert result.code == ExitCode.OK, result.output
    node_lines = [line for line in result.stdout.splitlines() if '["' in line]
    ids = [line.split("[", 1)[0].strip() for line in node_lines]
    assert len(set(ids)) == 2, result.stdout
