"""Output that cannot be forged: hostile revision messages on a real terminal (the live progress
line keeps working, the message's own escapes are shown, not obeyed) and in the DOT graph
(Graphviz itself reads every node back, whatever quotes and backslashes a message holds)."""

from __future__ import annotations

import shutil
import subprocess

import pexpect
import pytest

from tasks.core.errors import ExitCode
from tests.helpers import assert_ok, sqlite_url, terminal
from tests.revision_chains import create_table, empty_chain

SLOW = "import time\ntime.sleep(1.5)"


def test_the_live_line_draws_itself_but_not_a_messages_escapes(project):
    """The console's own `\\r\\x1b[K` still wipes the live line; the message's ESC is shown as
    the four characters `\\x1b`, so it cannot move the cursor up and erase earlier lines."""
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(project.tmp / "dev.sqlite3"))
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("a70000000001", "slow\x1b[3A\x1b[J one", SLOW)
    chain.add("a70000000002", "quick one", create_table("quick"))

    child = terminal("dev.upgrade")
    child.expect(r"applying a70000000001 slow\\x1b\[3A\\x1b\[J one 0s")
    child.expect(r"\r\x1b\[K")  # the console's own sequence: the live line is wiped
    child.expect(r"applied a70000000001 slow\\x1b\[3A\\x1b\[J one \(")
    child.expect(pexpect.EOF)
    output = child.before or ""
    child.close()

    assert child.exitstatus == 0
    assert "\x1b[3A" not in output and "\x1b[J" not in output


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graphviz_reads_a_graph_with_hostile_messages(project):
    """Quotes, a trailing backslash, newlines and a carriage return in messages stay inside
    their labels: Graphviz finds exactly the two nodes and the one edge."""
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(project.tmp / "dev.sqlite3"))
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("a80000000001", 'x"]; evil [label="y\\', "pass", record=False)
    chain.add("a80000000002", 'two\r"lines"\n}\ndigraph evil {', "pass", record=False)

    result = project.invoke("dev.history", "--graph", "--format", "dot")

    assert_ok(result)
    plain = subprocess.run(
        ["dot", "-Tplain"], input=result.stdout, capture_output=True, text=True, check=True
    ).stdout
    words = [line.split() for line in plain.splitlines()]
    nodes = {word[1].strip('"') for word in words if word[0] == "node"}
    edges = {(word[1].strip('"'), word[2].strip('"')) for word in words if word[0] == "edge"}
    assert nodes == {"a80000000001", "a80000000002"}, result.stdout
    assert edges == {("a80000000001", "a80000000002")}, result.stdout


@pytest.mark.hostile
@pytest.mark.parametrize(
    "argv", [("dev.plan",), ("dev.history",), ("dev.heads",), ("dev.show", "--rev", "head")]
)
def test_terminal_control_sequences_in_a_message_are_not_printed(
    project, existing_sqlite_url, argv
):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        "a00000000001",
        "users",
        'op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))',
        record=False,
    )
    chain.add("a00000000002", "harmless\x1b[3A\x1b[J", 'op.drop_table("users")', record=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", existing_sqlite_url)

    result = project.invoke(*argv)

    assert result.code == ExitCode.OK, result.output
    assert "harmless" in result.output
    assert "\x1b" not in result.output, repr(result.output)
