"""Issue 18.1: the stairway walks merges, branch points and `depends_on`, so a merge written by
`dev.merge` passes the tool's own `ci.check` (it failed with exit 22, "Ambiguous walk")."""

from __future__ import annotations

import textwrap

import pytest

from tasks.core.errors import ExitCode
from tests.helpers import FIRST, HEAD, ScriptCopy, assert_ok, copy_scripts

SIDE = "5de5de5de5de"
AFTER = "af7e7af7e7af"


def write_revision(copy: ScriptCopy, revision: str, down: str, body: str, **extra: str) -> None:
    """A revision creating (and dropping on downgrade) one table named after it."""
    table = f"t_{revision}"
    depends_on = extra.get("depends_on")
    (copy.versions / f"{revision}.py").write_text(
        textwrap.dedent(
            f'''\
            """{body}"""
            import sqlalchemy as sa
            from alembic import op

            revision = "{revision}"
            down_revision = "{down}"
            branch_labels = None
            depends_on = {depends_on!r}


            def upgrade() -> None:
                op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True))


            def downgrade() -> None:
                {extra.get("downgrade", f'op.drop_table("{table}")')}
            '''
        )
    )


@pytest.fixture
def branched(project, tmp_path) -> ScriptCopy:
    """FIRST -> HEAD -> AFTER, and FIRST -> SIDE (depends on HEAD): a branch point, two heads."""
    copy = copy_scripts(tmp_path / "scripts")
    write_revision(copy, SIDE, FIRST, "side branch", depends_on=HEAD)
    write_revision(copy, AFTER, HEAD, "after head")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    # The branch tables are not in the models: the models check must not be what fails here.
    project.setenv("INVOKE_MIGRATIONS_COMPARE_IGNORE", "remove_table:t_*")
    return copy


def test_a_merge_written_by_dev_merge_passes_ci_check(project, branched):
    merged = project.invoke_subprocess("dev.merge", "-m", "merge a and b")
    assert_ok(merged)

    result = project.invoke_subprocess("ci.check")

    assert_ok(result)
    assert "ok     stairway: sqlite: 5 revisions" in result.stdout, result.stdout


def test_the_merge_is_walked_down_to_each_parent(project, branched):
    """A merge's downgrade is run towards both parents: a failing one is named with its parent."""
    (branched.versions / "merge.py").write_text(
        textwrap.dedent(
            f'''\
            """merge"""
            revision = "3e3e3e3e3e3e"
            down_revision = ("{AFTER}", "{SIDE}")
            branch_labels = None
            depends_on = None


            def upgrade() -> None:
                pass


            def downgrade() -> None:
                from alembic import op

                if op.get_context().get_current_heads() == ("3e3e3e3e3e3e",):
                    op.execute("SELECT * FROM no_such_table")
            '''
        )
    )
    result = project.invoke_subprocess("ci.check")

    assert result.code == ExitCode.CI_STAIRWAY, result.output
    assert "revision 3e3e3e3e3e3e: downgrade to" in result.stdout, result.stdout
