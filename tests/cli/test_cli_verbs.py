"""Issue 12.1 and 12.2: Alembic's verbs a lead uses weekly (show, merge, branches, edit, the
revision flags), and reading the history without any database URL."""

from __future__ import annotations

import sys

import pexpect
import pytest

from tasks.core.errors import ExitCode
from tests.helpers import FIRST, HEAD, assert_ok, assert_one_line_error, copy_scripts

SIDE = "b0b0b0b0b0b0"


@pytest.fixture
def branched(project, tmp_path):
    """The repository's scripts plus a second head branching from FIRST; no URL for dev."""
    copy = copy_scripts(tmp_path / "scripts")
    copy.add_branch(SIDE, down_revision=FIRST)
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    return copy


@pytest.fixture
def linear(project, tmp_path):
    copy = copy_scripts(tmp_path / "scripts")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    return copy


# --- reading needs no database (12.2) -----------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [("dev.history",), ("dev.history", "--graph"), ("dev.heads",), ("dev.branches",)],
    ids=["history", "graph", "heads", "branches"],
)
def test_reading_without_any_url(project, branched, argv):
    result = project.invoke(*argv)

    assert_ok(result)
    assert SIDE in result.stdout or (argv == ("dev.history",) and HEAD in result.stdout)
    assert "current" not in result.stdout
    # The remark that nothing is marked is for terminals only; `heads` warns about two heads.
    assert result.stderr == "" or (argv == ("dev.heads",) and "2 heads" in result.stderr)


def test_on_a_terminal_the_reader_is_told_nothing_is_marked(project, branched):
    from tests.helpers import terminal

    child = terminal("dev.history", "--graph")
    child.expect("DATABASE_URL_DEVELOPMENT is not set: the database's revision is not marked")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_reading_with_a_url_marks_the_current_revision(project, branched, tmp_path):
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{tmp_path / 'dev.sqlite3'}")
    assert_ok(project.invoke("dev.upgrade", "--rev", HEAD))

    graph = project.invoke("dev.history", "--graph")
    history = project.invoke("dev.history")
    shown = project.invoke("dev.show", "--rev", HEAD)

    for result in (graph, history, shown):
        assert_ok(result)
        line = next(line for line in result.stdout.splitlines() if HEAD in line)
        assert "current" in line, result.stdout


def test_reading_never_creates_a_missing_sqlite_file(project, linear, tmp_path):
    database = tmp_path / "missing.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{database}")

    assert_ok(project.invoke("dev.history", "--graph"))
    assert not database.exists()


def test_current_with_no_scripts_says_so(project, tmp_path):
    copy = copy_scripts(tmp_path / "scripts")
    for path in copy.versions.glob("*.py"):
        path.unlink()
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{tmp_path / 'dev.sqlite3'}")
    (tmp_path / "dev.sqlite3").touch()  # a read never creates the file (issue 18.4)

    result = project.invoke("dev.current")

    assert_ok(result)
    assert "no revisions yet" in result.stdout
    assert "head is \n" not in result.stdout + "\n" and "head is" not in result.stdout


# --- show (12.1) ------------------------------------------------------------------------------


def test_show_without_a_url_renders_postgresql_sql(project, linear):
    result = project.invoke("dev.show", "-r", HEAD)

    assert_ok(result)
    out = result.stdout
    assert f"Revision ID:  {HEAD} (head)" in out
    assert f"Revises:      {FIRST}" in out
    assert "add memberships" in out  # message and docstring
    assert "-- upgrade SQL (postgresql):" in out
    assert "CREATE TYPE membership_role AS ENUM" in out  # PostgreSQL's own DDL
    assert "no database URL: rendered for postgresql; --dialect" in out
    assert result.stderr == ""


def test_show_for_the_environment_dialect(project, linear, tmp_path):
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{tmp_path / 'dev.sqlite3'}")

    result = project.invoke("dev.show", "--rev", HEAD)

    assert_ok(result)
    assert "-- upgrade SQL (sqlite):" in result.stdout
    assert "CREATE TYPE" not in result.stdout and "CREATE TABLE memberships" in result.stdout
    assert not (tmp_path / "dev.sqlite3").exists()  # still nothing created by a read


def test_show_with_dialect_flag(project, linear):
    result = project.invoke("dev.show", "-r", FIRST, "--dialect", "mysql")

    assert_ok(result)
    assert "-- upgrade SQL (mysql):" in result.stdout
    assert "AUTO_INCREMENT" in result.stdout


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("dev.show",), "--rev"),
        (("dev.show", "-r", "nosuchrev"), "nosuchrev"),
        (("dev.show", "-r", HEAD, "--dialect", "oracle9"), "--dialect"),
    ],
    ids=["missing-rev", "unknown-rev", "bad-dialect"],
)
def test_show_bad_input(project, linear, argv, needle):
    assert_one_line_error(project.invoke(*argv), ExitCode.USAGE, needle)


# --- branches and merge (12.1) ----------------------------------------------------------------


def test_branches_lists_the_branch_point_and_its_heads(project, branched):
    result = project.invoke("dev.branches")

    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(FIRST)
    assert any(line.startswith(f"  -> {HEAD} (head)") for line in lines)
    assert any(line.startswith(f"  -> {SIDE} (head)") for line in lines)
    assert "invoke dev.merge -m" in result.stdout


def test_heads_warning_names_the_merge_task(project, branched):
    result = project.invoke("dev.heads")

    assert_ok(result)
    assert "invoke dev.merge -m MESSAGE" in result.stderr
    assert "alembic merge heads" not in result.output


def test_merge_writes_a_merge_revision_joining_the_heads(project, branched):
    result = project.invoke("dev.merge", "-m", "join branches", "--rev-id", "m3m3m3m3m3m3")

    assert_ok(result)
    assert "created" in result.stdout and "m3m3m3m3m3m3" in result.stdout
    heads = project.invoke("dev.heads")
    assert heads.stdout.split()[0] == "m3m3m3m3m3m3"
    assert len([line for line in heads.stdout.splitlines() if "(head)" in line]) == 1
    shown = project.invoke("dev.show", "-r", "m3m3m3m3m3m3")
    assert "(head, mergepoint)" in shown.stdout
    assert f"{HEAD}, {SIDE}" in shown.stdout or f"{SIDE}, {HEAD}" in shown.stdout


def test_merge_with_one_head_has_nothing_to_do(project, linear):
    before = set(linear.files())

    result = project.invoke("dev.merge", "-m", "x")

    assert_ok(result)
    assert "nothing to merge: one head" in result.stdout
    assert set(linear.files()) == before


def test_merge_is_not_offered_on_prod(project, branched):
    result = project.invoke("prod.merge", "-m", "x")

    assert result.code == ExitCode.FAILED  # Invoke: no such task


def test_merge_follows_the_ownership_policy(project, branched):
    before = set(branched.files())
    project.setenv("INVOKE_MIGRATIONS_OWNERS", "lead@example.com")

    result = project.invoke("dev.merge", "-m", "x")

    assert_one_line_error(result, ExitCode.REFUSED, "lead@example.com")
    assert set(branched.files()) == before


# --- edit (12.1) ------------------------------------------------------------------------------


def test_edit_opens_the_revision_file_in_editor(project, linear, tmp_path):
    opened = tmp_path / "opened.txt"
    project.setenv(
        "EDITOR",
        f"{sys.executable} -c \"import sys; open({str(opened)!r}, 'w').write(sys.argv[1])\"",
    )
    project.monkeypatch.delenv("VISUAL", raising=False)

    result = project.invoke("dev.edit", "-r", HEAD)

    assert_ok(result)
    assert opened.read_text().endswith(f"{HEAD}_add_memberships.py")


def test_edit_without_an_editor_is_one_line(project, linear):
    project.monkeypatch.delenv("EDITOR", raising=False)
    project.monkeypatch.delenv("VISUAL", raising=False)

    assert_one_line_error(project.invoke("dev.edit", "-r", HEAD), ExitCode.USAGE, "$EDITOR")


# --- revision's Alembic flags (12.1) ----------------------------------------------------------


def test_revision_empty_with_rev_id_needs_no_database(project, linear):
    result = project.invoke("dev.revision", "-m", "data fix", "--empty", "--rev-id", "d4d4d4d4d4d4")

    assert_ok(result)
    (path,) = [p for p in linear.versions.glob("*d4d4d4d4d4d4*.py")]
    source = path.read_text()
    # ruff's post-write hook may have rewritten the quotes and the annotation
    assert f"down_revision = '{HEAD}'" in source.replace('"', "'").replace(
        ": Union[str, Sequence[str], None]", ""
    ).replace(": str | Sequence[str] | None", "")


def test_revision_new_branch_from_base_with_label_and_dependency(project, linear):
    result = project.invoke(
        "dev.revision",
        "-m",
        "audit branch",
        "--empty",
        "--head",
        "base",
        "--branch-label",
        "audit",
        "--depends-on",
        FIRST,
        "--rev-id",
        "a1a1a1a1a1a1",
    )

    assert_ok(result)
    shown = project.invoke("dev.show", "-r", "audit@head")
    assert_ok(shown)
    assert "a1a1a1a1a1a1" in shown.stdout
    assert "Branch names: audit" in shown.stdout
    assert f"Depends on:   {FIRST}" in shown.stdout
    assert "Revises:      <base>" in shown.stdout


def test_revision_splice_starts_a_branch_at_a_non_head(project, linear):
    refused = project.invoke("dev.revision", "-m", "x", "--empty", "--head", FIRST)
    assert_one_line_error(refused, ExitCode.USAGE, "splice")

    result = project.invoke(
        "dev.revision",
        "-m",
        "side",
        "--empty",
        "--head",
        FIRST,
        "--splice",
        "--rev-id",
        "5p5p5p5p5p5p",
    )

    assert_ok(result)
    assert len([line for line in project.invoke("dev.heads").stdout.splitlines() if line]) == 2


def test_revision_empty_and_autogenerate_contradict(project, linear):
    before = set(linear.files())
    result = project.invoke("dev.revision", "-m", "x", "--empty", "--autogenerate")

    assert_one_line_error(result, ExitCode.USAGE, "--empty")
    assert set(linear.files()) == before


def test_revision_with_several_heads_points_to_merge(project, branched, tmp_path):
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{tmp_path / 'dev.sqlite3'}")

    result = project.invoke("dev.revision", "-m", "x")

    assert_one_line_error(result, ExitCode.USAGE, "invoke dev.merge -m MESSAGE", "--head")


@pytest.mark.parametrize(
    "argv",
    [
        ("dev.upgrade", "--sql"),
        ("dev.downgrade", "--sql", "--rev", f"{HEAD}:base"),
        ("dev.stamp", "--sql", "--rev", HEAD),
        ("prod.upgrade", "--sql"),
    ],
    ids=["upgrade", "downgrade", "stamp", "prod-upgrade"],
)
def test_sql_rendering_needs_no_url(project, linear, argv):
    result = project.invoke(*argv)

    assert_ok(result)
    variable = (
        "DATABASE_URL_PRODUCTION" if argv[0].startswith("prod") else "DATABASE_URL_DEVELOPMENT"
    )
    assert result.stdout.startswith(f"-- {variable} is not set: SQL rendered for postgresql\n")
    assert "alembic_version" in result.stdout
    assert not project.log_records() or all(
        r.get("outcome") in (None, "ok") for r in project.log_records()
    )


@pytest.mark.hostile
def test_show_with_a_relative_revision_is_one_clear_line(project, users_chain):
    project.monkeypatch.delenv("DATABASE_URL_DEVELOPMENT", raising=False)

    result = project.invoke("dev.show", "--rev", "-1")

    assert "unexpected error" not in result.output, result.output
    assert result.code in (ExitCode.OK, ExitCode.USAGE), result.output


@pytest.mark.hostile
def test_edit_with_an_unparsable_editor_is_a_configuration_error(project, users_chain):
    project.setenv("EDITOR", '"unterminated')
    project.monkeypatch.delenv("VISUAL", raising=False)

    result = project.invoke("dev.edit", "--rev", "head")

    assert "unexpected error" not in result.output, result.output
    assert_one_line_error(result, ExitCode.USAGE, "EDITOR")
