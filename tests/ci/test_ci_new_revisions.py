"""`ci.check` lints what is new: a reviewed drop (consent written in its revision) passes, and
with `--base REF` only the revisions whose files differ from that git base are linted, so an
old drop never turns a later pull request red."""

from __future__ import annotations

import subprocess

import pytest

from tasks.core.errors import ExitCode
from tests.ci.test_ci_check import add_revision
from tests.helpers import HEAD, ScriptCopy, assert_ok, assert_one_line_error, copy_scripts

DROP = "cc33cc33cc33"
LATER = "dd44dd44dd44"


@pytest.fixture
def scripts(project, tmp_path) -> ScriptCopy:
    copy = copy_scripts(tmp_path / "scripts")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    project.setenv("INVOKE_MIGRATIONS_CI_POSTGRES_URL", "")
    project.setenv(
        "INVOKE_MIGRATIONS_METADATA", "tests.ci.test_ci_check:models_without_archived_at"
    )
    return copy


def git(directory, *argv: str) -> None:  # type: ignore[no-untyped-def]
    subprocess.run(
        ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", *argv],
        cwd=directory,
        check=True,
        capture_output=True,
    )


def add_drop(scripts: ScriptCopy, consent: str = "") -> None:
    add_revision(
        scripts,
        DROP,
        HEAD,
        "op.drop_column('projects', 'archived_at')",
        "op.add_column('projects', sa.Column('archived_at', sa.DateTime(timezone=True)))",
    )
    if consent:
        path = scripts.versions / f"{DROP}.py"
        path.write_text(path.read_text().replace("depends_on = None\n", f"{consent}\n", 1))


def test_a_reviewed_drop_with_written_consent_passes_lint(project, scripts):
    add_drop(scripts)
    assert project.invoke("ci.check").code == ExitCode.CI_LINT

    path = scripts.versions / f"{DROP}.py"
    path.unlink()
    add_drop(scripts, 'depends_on = None\nconsent = {"drop-column": "archived_at unused (PR 7)"}')

    result = project.invoke("ci.check")
    assert_ok(result)
    assert "ok     lint" in result.stdout


def test_base_lints_only_revisions_changed_since_the_git_base(project, scripts):
    add_drop(scripts)
    git(scripts.ini.parent, "init", "-q")
    git(scripts.ini.parent, "add", "-A")
    git(scripts.ini.parent, "commit", "-q", "-m", "history with a reviewed drop")
    add_revision(
        scripts,
        LATER,
        DROP,
        "op.create_index('ix_projects_name_later', 'projects', ['name'])",
        "op.drop_index('ix_projects_name_later', table_name='projects')",
    )
    project.setenv(
        "INVOKE_MIGRATIONS_METADATA", "tests.ci.test_ci_new_revisions:models_with_later_index"
    )

    everything = project.invoke("ci.check")
    assert everything.code == ExitCode.CI_LINT, everything.output
    assert f"revision {DROP}: drop-column" in everything.stdout

    new_only = project.invoke("ci.check", "--base", "HEAD")
    assert_ok(new_only)
    assert "ok     lint: 1 revision" in new_only.stdout


def test_an_unknown_base_is_bad_input(project, scripts):
    git(scripts.ini.parent, "init", "-q")
    result = project.invoke("ci.check", "--base", "no-such-ref")
    assert_one_line_error(result, ExitCode.USAGE, "--base")


def models_with_later_index():
    from sqlalchemy import Index

    from tests.ci.test_ci_check import models_without_archived_at

    metadata = models_without_archived_at()
    Index("ix_projects_name_later", metadata.tables["projects"].c.name)
    return metadata
