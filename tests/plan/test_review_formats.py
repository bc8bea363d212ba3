"""Issue 12.7: output for review. The revision graph of a branched history as Mermaid and DOT
(checked structurally: nodes, edges, merge points; the DOT also through Graphviz itself), the
plan and ci.check as Markdown, and the audit as an aligned table and proper JSON."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tasks.core import confirmation
from tasks.core.errors import ExitCode
from tests.helpers import (
    FIRST,
    HEAD,
    assert_ok,
    assert_one_line_error,
    copy_scripts,
    outside_code,
    sqlite_url,
)
from tests.plan.test_plan import accounts_chain
from tests.revision_chains import Chain, empty_chain

SIDE = "b0b0b0b0b0b0"
MERGE = "m3m3m3m3m3m3"
EDGES = {(FIRST, HEAD), (FIRST, SIDE), (HEAD, MERGE), (SIDE, MERGE)}


@pytest.fixture
def merged(project, tmp_path):
    """FIRST branches into HEAD and SIDE, which MERGE joins; dev (SQLite) is at HEAD."""
    copy = copy_scripts(tmp_path / "scripts")
    copy.add_branch(SIDE, down_revision=FIRST)
    copy.add_merge(MERGE, (HEAD, SIDE), 'merge the "branches" <here>')
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(tmp_path / "g.sqlite3"))
    assert_ok(project.invoke("dev.upgrade", "--rev", HEAD))
    return copy


def test_mermaid_graph_of_a_branched_history(project, merged):
    result = project.invoke("dev.history", "--graph", "--format", "mermaid")

    assert_ok(result)
    out = result.stdout
    assert out.startswith("flowchart TD\n")
    nodes = dict(re.findall(r'^    r_(\w+)\["([^"]*)"\]$', out, re.M))
    edges = set(re.findall(r"^    r_(\w+) --> r_(\w+)$", out, re.M))
    assert set(nodes) == {FIRST, HEAD, SIDE, MERGE}
    assert edges == EDGES
    assert sum(1 for _, child in edges if child == MERGE) == 2  # the merge point
    assert "(head, mergepoint)" in nodes[MERGE]
    assert "(current)" in nodes[HEAD] and "(branchpoint)" in nodes[FIRST]
    assert "#quot;branches#quot; #lt;here#gt;" in nodes[MERGE]  # quotes cannot end the label
    assert re.search(rf"^    class r_{HEAD} current$", out, re.M)


def _dot_structure(text: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    nodes = dict(re.findall(r'^    "(\w+)" \[label="([^"]*)"', text, re.M))
    edges = set(re.findall(r'^    "(\w+)" -> "(\w+)";$', text, re.M))
    return nodes, edges


def test_dot_graph_of_a_branched_history(project, merged):
    result = project.invoke("dev.history", "--graph", "--format", "dot")

    assert_ok(result)
    nodes, edges = _dot_structure(result.stdout)
    assert set(nodes) == {FIRST, HEAD, SIDE, MERGE}
    assert edges == EDGES
    assert "(head, mergepoint)" in nodes[MERGE] and "(current)" in nodes[HEAD]
    assert result.stdout.strip().startswith("digraph revisions {")
    assert result.stdout.strip().endswith("}")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graphviz_reads_the_dot_graph(project, merged):
    """Graphviz's own parser: `dot -Tplain` lists the nodes and edges it understood."""
    result = project.invoke("dev.history", "--format", "dot")
    assert_ok(result)

    plain = subprocess.run(
        ["dot", "-Tplain"], input=result.stdout, capture_output=True, text=True, check=True
    ).stdout

    words = [line.replace('"', "").split() for line in plain.splitlines()]
    nodes = {word[1] for word in words if word[0] == "node"}
    edges = {(word[1], word[2]) for word in words if word[0] == "edge"}
    assert nodes == {FIRST, HEAD, SIDE, MERGE}
    assert edges == EDGES
    svg = subprocess.run(
        ["dot", "-Tsvg"], input=result.stdout, capture_output=True, text=True, check=True
    ).stdout
    assert svg.count('class="node"') == 4 and svg.count('class="edge"') == 4


def test_graph_formats_need_no_database(project, merged):
    project.monkeypatch.delenv("DATABASE_URL_DEVELOPMENT")

    result = project.invoke("dev.history", "--format", "mermaid")

    assert_ok(result)
    assert "current" not in result.stdout and result.stderr == ""


def test_unknown_graph_format_is_one_line(project, merged):
    assert_one_line_error(
        project.invoke("dev.history", "--graph", "--format", "pdf"), ExitCode.USAGE, "--format"
    )


# --- plan and ci.check as Markdown --------------------------------------------------------------


@pytest.mark.postgres
def test_plan_as_markdown(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    chain = accounts_chain(project)
    assert_ok(project.invoke("dev.upgrade", "--rev", chain.ids[0]))

    result = project.invoke("dev.plan", "--format", "markdown")

    assert_ok(result)
    out = result.stdout
    assert out.startswith("## Migration plan: development\n")
    assert "3 revisions to apply" in out and "revision(s)" not in out
    summary = next(line for line in out.splitlines() if line.startswith("**Summary:**"))
    assert "3 revisions" in summary and "destructive finding" in summary
    assert "--allow-destructive" in summary
    sections = re.findall(r"^### `(\w+)`", out, re.M)
    assert sections == chain.ids[1:]
    fences = re.findall(r"^```sql\n(.*?)\n```$", out, re.M | re.S)
    assert len(fences) == 3
    assert any("DROP COLUMN legacy" in block for block in fences)
    assert "- **DESTRUCTIVE** `drop-column`" in out
    assert re.search(r"- \*\*BLOCKING\*\* `require-concurrent-index-creation`", out)
    table = [line for line in out.splitlines() if line.startswith("| `")]
    assert len(table) == 3 and "clean" in table[-1]


def test_plan_format_and_json_conflict(project, tmp_path):
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(tmp_path / "dev.sqlite3"))
    (tmp_path / "dev.sqlite3").touch()  # a read never creates the file

    result = project.invoke("dev.plan", "--json", "--format", "markdown")

    assert_one_line_error(result, ExitCode.USAGE, "--format")


def test_ci_check_as_markdown(project):
    project.setenv("INVOKE_MIGRATIONS_CI_POSTGRES_URL", "")  # SQLite legs only: quicker

    result = project.invoke("ci.check", "--format", "markdown")

    assert_ok(result)
    out = result.stdout
    assert out.startswith("## Migration checks (ci.check)\n")
    assert re.search(r"^\*\*All \d+ checks passed\.\*\*$", out, re.M)
    rows = [line for line in out.splitlines() if line.startswith("| ok |")]
    checks = {row.split("|")[2].strip() for row in rows}
    assert {"heads", "models", "lint"} <= {check.split()[0] for check in checks}
    assert "  ok    " not in out  # not the terminal lines


def test_ci_check_markdown_reports_the_failure(project, tmp_path):
    copy = copy_scripts(tmp_path / "scripts")
    copy.add_branch(SIDE, down_revision=FIRST)
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv("INVOKE_MIGRATIONS_CI_POSTGRES_URL", "")

    result = project.invoke("ci.check", "--format", "markdown")

    assert result.code == ExitCode.CI_HEADS
    assert re.search(r"^\*\*\d+ checks? failed\*\* of \d+; exit code 20\.$", result.stdout, re.M)
    assert "| **FAILED** | heads |" in result.stdout


# --- audit ------------------------------------------------------------------------------------


@pytest.fixture
def audited(project, tmp_path):
    url = sqlite_url(tmp_path / "dev.sqlite3")
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    assert_ok(project.invoke("dev.upgrade", "--rev", FIRST))
    assert_ok(project.invoke("dev.upgrade"))
    return url


def test_audit_is_an_aligned_table_with_a_header(project, audited):
    result = project.invoke("dev.audit")

    assert_ok(result)
    header, *rows = result.stdout.splitlines()
    columns = ["STARTED (UTC)", "OUTCOME", "TASK", "REVISIONS", "OPERATOR", "HOST", "DURATION"]
    starts = [header.index(column) for column in columns]
    assert starts == sorted(starts)
    assert len(rows) == 2
    for row in rows:
        assert row[starts[1] :].startswith("ok ")
        assert row[starts[2] :].startswith("dev.upgrade ")
        assert row[starts[4] :].startswith("tester@example.com ")  # operator alone
        assert not row[starts[5] :].startswith("?")  # the host in its own column
    assert f"{FIRST} -> {HEAD}" in rows[0] and f"base -> {FIRST}" in rows[1]


def test_audit_json_has_arguments_as_an_object(project, audited):
    result = project.invoke("dev.audit", "--json")

    assert_ok(result)
    latest = json.loads(result.stdout)[0]
    assert (
        latest["arguments"]
        == {
            "rev": "head",
            "sql": False,
            "yes": False,
            "backup": True,
            "allow_destructive": False,
        }
        or latest["arguments"]["rev"] == "head"
    )
    assert isinstance(latest["arguments"], dict)


def test_audit_duration_leaves_out_the_time_at_the_prompt(project, audited, monkeypatch):
    """The operator's hour at the prompt (a stand-in clock) is not the run's duration."""
    from tests.helpers import FakeTerminal

    ticks = iter([0.0, 3600.0])
    monkeypatch.setattr(confirmation, "_clock", lambda: next(ticks))
    monkeypatch.setattr("sys.stdin", FakeTerminal("y\n"))

    assert_ok(project.invoke("dev.downgrade", "--rev", "-1"))

    latest = json.loads(project.invoke("dev.audit", "--json").stdout)[0]
    assert latest["task"] == "dev.downgrade"
    assert latest["duration_ms"] < 3_600_000  # without the hour at the prompt
    finished = [r for r in project.log_records() if r.get("event") == "task finished"][-2]
    assert finished["task"] == "dev.downgrade" and finished["duration_ms"] < 3_600_000


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


@pytest.mark.hostile
def test_plan_markdown_keeps_a_hostile_message_inside_its_heading(project, existing_sqlite_url):
    chain_with_message(project, HOSTILE_MESSAGE)
    project.setenv("DATABASE_URL_DEVELOPMENT", existing_sqlite_url)

    result = project.invoke("dev.plan", "--format", "markdown")

    assert result.code == ExitCode.OK, result.output
    lines = result.stdout.splitlines()
    assert not any(line.startswith("# Approved") for line in lines), result.stdout
    assert "<img" not in result.stdout, result.stdout
    assert sum(line.startswith("```") for line in lines) % 2 == 0, result.stdout


@pytest.mark.hostile
def test_mermaid_history_keeps_a_hostile_message_inside_its_label(project, existing_sqlite_url):
    chain_with_message(project, 'x\n```\n# heading\n    click r_a00000000001 href "https://evil"')
    project.setenv("DATABASE_URL_DEVELOPMENT", existing_sqlite_url)

    result = project.invoke("dev.history", "--graph", "--format", "mermaid")

    assert result.code == ExitCode.OK, result.output
    assert "```" not in result.stdout, result.stdout
    # Every indented line is a statement the renderer wrote (a message's `click` line is not),
    # and the one revision is one node line: its label stays in it.
    statement = re.compile(
        r'    (r_\w+\["[^"\n]*"\]|r_\w+ --> r_\w+|classDef \w+ .+|class [\w,]+ \w+)'
    )
    lines = result.stdout.splitlines()
    assert [line for line in lines if not line.startswith(" ")] == ["flowchart TD"], result.stdout
    indented = [line for line in lines if line.startswith(" ")]
    assert all(statement.fullmatch(line) for line in indented), result.stdout
    assert sum('["' in line for line in indented) == 1, result.stdout


@pytest.mark.hostile
def test_mermaid_history_draws_two_revisions_as_two_nodes(project, existing_sqlite_url):
    chain = chain_with_message(project, "first", revision="a.b")
    chain.add("a_b", "second", "pass", record=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", existing_sqlite_url)

    result = project.invoke("dev.history", "--graph", "--format", "mermaid")

    assert result.code == ExitCode.OK, result.output
    node_lines = [line for line in result.stdout.splitlines() if '["' in line]
    ids = [line.split("[", 1)[0].strip() for line in node_lines]
    assert len(set(ids)) == 2, result.stdout


@pytest.mark.hostile
def test_plan_markdown_keeps_hostile_sql_inside_code(project, existing_sqlite_url):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        "a00000000001",
        "drop users",
        'op.execute("DROP TABLE users -- `<img src=https://evil.example/t.png>` [ok](https://e)")',
        record=False,
    )
    project.setenv("DATABASE_URL_DEVELOPMENT", existing_sqlite_url)

    result = project.invoke("dev.plan", "--format", "markdown")

    assert result.code == ExitCode.OK, result.output
    assert "evil" in result.stdout, result.stdout
    assert "evil" not in outside_code(result.stdout), result.stdout
