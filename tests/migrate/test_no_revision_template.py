"""A script directory without script.py.mako (issue 17: mlflow's wheel ships only env.py and
versions/). `revision` and `merge` write their file from Alembic's own generic template and say
so in one line; a script.py.mako put there is used instead."""

from __future__ import annotations

import pytest

from tests.helpers import FIRST, ScriptCopy, assert_ok, copy_scripts

NOTICE = "has no script.py.mako: Alembic's generic template is used"


@pytest.fixture
def scripts(project, tmp_path) -> ScriptCopy:
    copy = copy_scripts(tmp_path / "scripts")
    (copy.versions.parent / "script.py.mako").unlink()
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{tmp_path / 'dev.sqlite3'}")
    return copy


def test_revision_without_a_template_is_written_from_alembics_generic_one(project, scripts):
    before = scripts.files()

    result = project.invoke("dev.revision", "-m", "add a table", "--empty")

    assert_ok(result)
    assert NOTICE in result.stdout
    (name,) = scripts.files() - before
    path = scripts.versions / name
    body = path.read_text()
    assert '"""add a table' in body and "def upgrade() -> None:" in body


def test_merge_without_a_template_is_written(project, scripts):
    scripts.add_branch("b0b0b0b0b0b0", down_revision=FIRST)
    before = scripts.files()

    result = project.invoke("dev.merge", "-m", "merge a and b")

    assert_ok(result)
    assert NOTICE in result.stdout
    assert len(scripts.files() - before) == 1


def test_a_template_put_back_is_used_and_nothing_is_said(project, scripts):
    (scripts.versions.parent / "script.py.mako").write_text(
        '"""${message}"""\nrevision = ${repr(up_revision)}\n'
        "down_revision = ${repr(down_revision)}\nbranch_labels = None\ndepends_on = None\n"
        "# the team's own template\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    )
    before = scripts.files()

    result = project.invoke("dev.revision", "-m", "own", "--empty")

    assert_ok(result)
    assert NOTICE not in result.stdout
    (name,) = scripts.files() - before
    path = scripts.versions / name
    assert "the team's own template" in path.read_text()
