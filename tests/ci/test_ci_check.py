"""`invoke ci.check`: each check passes on the project's history and fails, naming itself and
the revision, on a history broken in exactly that way."""

from __future__ import annotations

import textwrap

import pytest

from tasks.core.errors import ExitCode
from tests.helpers import HEAD, ScriptCopy, assert_ok, copy_scripts, outside_code
from tests.revision_chains import empty_chain


@pytest.fixture
def scripts(project, tmp_path, pg_server) -> ScriptCopy:
    copy = copy_scripts(tmp_path / "scripts")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv(
        "INVOKE_MIGRATIONS_CI_POSTGRES_URL", pg_server.url.render_as_string(hide_password=False)
    )
    return copy


def add_revision(copy: ScriptCopy, revision: str, down: str, upgrade: str, downgrade: str) -> None:
    body = textwrap.dedent(
        '''\
        """{revision} under test"""
        import sqlalchemy as sa
        from alembic import op

        revision = "{revision}"
        down_revision = "{down}"
        branch_labels = None
        depends_on = None


        def upgrade() -> None:
        {upgrade}


        def downgrade() -> None:
        {downgrade}
        '''
    ).format(
        revision=revision,
        down=down,
        upgrade=textwrap.indent(textwrap.dedent(upgrade).strip(), "    "),
        downgrade=textwrap.indent(textwrap.dedent(downgrade).strip(), "    "),
    )
    (copy.versions / f"{revision}.py").write_text(body)


def test_project_history_passes_every_check_on_both_dialects(project, scripts):
    result = project.invoke("ci.check")
    assert_ok(result)
    for check in (
        "heads",
        "downgrades",
        "stairway: sqlite",
        "stairway: postgresql",
        "models: sqlite",
        "models: postgresql",
        "lint",
    ):
        assert f"ok     {check}" in result.stdout, result.stdout


def test_two_heads_fail_the_heads_check(project, scripts):
    scripts.add_branch("b0b0b0b0b0b0")
    result = project.invoke("ci.check")
    assert result.code == ExitCode.CI_HEADS, result.output
    assert "FAILED heads: 2 heads" in result.stdout


def test_missing_downgrade_is_named(project, scripts):
    add_revision(
        scripts,
        "aa11aa11aa11",
        HEAD,
        "op.add_column('users', sa.Column('nickname', sa.String(40), nullable=True))",
        "pass",
    )
    result = project.invoke("ci.check")
    assert result.code == ExitCode.CI_DOWNGRADES, result.output
    assert "revision aa11aa11aa11 has no real downgrade()" in result.output


def test_stairway_catches_a_downgrade_that_leaves_an_enum_type_behind(project, scripts):
    add_revision(
        scripts,
        "bb22bb22bb22",
        HEAD,
        """
        op.create_table('labels', sa.Column('id', sa.Integer, primary_key=True),
                        sa.Column('tone', sa.Enum('warm', 'cold', name='label_tone')))
        """,
        "op.drop_table('labels')",  # forgets DROP TYPE label_tone on PostgreSQL
    )
    result = project.invoke("ci.check")
    assert result.code != ExitCode.OK
    assert (
        "FAILED stairway: postgresql: revision bb22bb22bb22: upgrade again failed" in result.stdout
    )
    assert "ok     stairway: sqlite" in result.stdout  # SQLite has no separate enum types


def test_models_that_differ_from_the_history_are_listed(project, scripts):
    project.setenv("INVOKE_MIGRATIONS_METADATA", "tests.models_changed:metadata")
    result = project.invoke("ci.check")
    assert result.code == ExitCode.CI_MODELS, result.output
    assert "FAILED models: sqlite:" in result.stdout
    assert "add_column users.nickname" in result.stdout
    assert "add_table audit_notes" in result.stdout


def test_destructive_upgrade_fails_lint_unless_configured_otherwise(project, scripts):
    add_revision(
        scripts,
        "cc33cc33cc33",
        HEAD,
        "op.drop_column('projects', 'archived_at')",
        "op.add_column('projects', sa.Column('archived_at', sa.DateTime(timezone=True)))",
    )
    project.setenv(
        "INVOKE_MIGRATIONS_METADATA", "tests.ci.test_ci_check:models_without_archived_at"
    )
    result = project.invoke("ci.check")
    assert result.code == ExitCode.CI_LINT, result.output
    assert "FAILED lint: revision cc33cc33cc33: drop-column" in result.stdout

    project.setenv("INVOKE_MIGRATIONS_CI_FAIL_ON", "")
    assert_ok(project.invoke("ci.check"))


def models_without_archived_at():
    from sqlalchemy import MetaData

    from database.base import NAMING_CONVENTION
    from database.imports import import_all_models

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    for table in import_all_models().sorted_tables:
        table.to_metadata(metadata)
    projects = metadata.tables["projects"]
    projects._columns.remove(projects.c.archived_at)
    return metadata


@pytest.mark.hostile
def test_ci_check_markdown_keeps_html_from_errors_out_of_the_comment(project, existing_sqlite_url):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add(
        "a00000000001",
        "hostile table",
        """op.execute('CREATE TABLE "<img src=https://evil.example/x.png>" (id int)')""",
        record=False,
    )
    project.setenv("DATABASE_URL_DEVELOPMENT", existing_sqlite_url)

    result = project.invoke("ci.check", "--format", "markdown")

    assert "evil.example" in result.stdout, result.output
    assert "<img" not in outside_code(result.stdout), result.stdout
