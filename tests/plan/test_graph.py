"""`history --graph` draws branches, merges, heads and the current revision."""

from __future__ import annotations

from tests.helpers import FIRST, HEAD, assert_ok, copy_scripts


def test_branched_history_is_drawn_with_lanes_and_marks(project, tmp_path):
    copy = copy_scripts(tmp_path / "scripts")
    copy.add_branch("b0b0b0b0b0b0", down_revision=FIRST)
    copy.add_merge("m3m3m3m3m3m3", (HEAD, "b0b0b0b0b0b0"), "merge the branches")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{tmp_path / 'g.sqlite3'}")
    assert_ok(project.invoke("dev.upgrade", "--rev", HEAD))

    result = project.invoke("dev.history", "--graph")
    assert_ok(result)
    lines = result.stdout.splitlines()
    merge = next(line for line in lines if "m3m3m3m3m3m3" in line)
    assert merge.startswith("*") and "(head, mergepoint)" in merge
    assert any(line.strip() == "| \\" for line in lines), lines  # the merge opens a lane
    current = next(line for line in lines if HEAD in line)
    assert "(current)" in current and current.startswith("* |")
    side = next(line for line in lines if "b0b0b0b0b0b0" in line)
    assert side.startswith("| *")
    assert any(line.strip() == "| /" for line in lines), lines  # the branch point closes it
    root = next(line for line in lines if FIRST in line)
    assert root.startswith("*") and "(branchpoint)" in root
    assert lines.index(merge) < lines.index(current) < lines.index(side) < lines.index(root)
