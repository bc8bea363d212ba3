"""Issue 18.8: output a person can read. Data is shown, not obeyed (a line break in a
message forges no row, bidi controls are escaped), letters of any script print as they are,
and the plan's summary is in words with warnings counted."""

from __future__ import annotations

from tasks.plan.steps import readable_subject
from tests.helpers import FIRST, assert_ok, copy_scripts

MESSAGE = "add caf\u00e9 table\nRevision ID:  forged\u202e"


def test_show_keeps_a_message_on_its_line_and_prints_letters_as_they_are(project, tmp_path):
    copy = copy_scripts(tmp_path / "scripts")
    (copy.versions / "c0ffee000001.py").write_text(
        f'"""{MESSAGE}"""\n'
        'revision = "c0ffee000001"\n'
        f'down_revision = "{FIRST}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n    pass\n\n\n"
        "def downgrade() -> None:\n    pass\n",
        encoding="utf-8",
    )
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))

    result = project.invoke_subprocess("dev.show", "-r", "c0ffee000001")

    assert_ok(result)
    header = result.stdout.split("\n\n")[0].splitlines()
    assert [line.split(":")[0] for line in header].count("Revision ID") == 1, header
    message = next(line for line in header if line.startswith("Message:"))
    assert "caf\u00e9" in message and "\\x0a" in message and "\\u202e" in message
    assert "\u202e" not in result.stdout


def test_history_prints_one_line_per_revision_whatever_its_message(project, tmp_path):
    copy = copy_scripts(tmp_path / "scripts")
    (copy.versions / "c0ffee000001.py").write_text(
        f'"""{MESSAGE}"""\n'
        'revision = "c0ffee000001"\n'
        f'down_revision = "{FIRST}"\n'
        "branch_labels = None\ndepends_on = None\n",
        encoding="utf-8",
    )
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))

    result = project.invoke_subprocess("dev.history")

    assert_ok(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines  # two revisions of the project's, and this one
    (ours,) = [line for line in lines if "c0ffee000001" in line]
    assert "caf\u00e9" in ours and "\\x0a" in ours


def test_a_parser_node_in_a_finding_reads_as_its_names():
    node = "drop type <TypeName names=(<String sval='public'>, <String sval='mood'>) setof=False>"

    assert readable_subject(node) == "drop type public.mood"
    assert readable_subject("drop column users.legacy") == "drop column users.legacy"
