"""`revision -m ... [--autogenerate]`: refuses unless the database is at head, prints the new
file and one line per operation, shouts about drops, writes nothing when nothing changed.

Scripts are private copies selected with INVOKE_MIGRATIONS_ALEMBIC_INI: the repository's
alembic/versions is never written, so concurrent runs never see a stray head."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks.core.errors import ExitCode
from tests.conftest import ROOT, schema_snapshot
from tests.helpers import (
    FIRST,
    HEAD,
    assert_ok,
    assert_one_line_error,
    copy_scripts,
    prepare,
    scripts_inside_project,
    sqlite_url,
    table_names,
    version_rows,
)

CHANGED = "tests.models_changed:metadata"
MISSING_TABLE = "tests.models_missing_table:metadata"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def dev_url(request, project):
    if request.param == "sqlite":
        return sqlite_url(project.tmp / "dev.sqlite3")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def scripts(project):
    """Private scripts outside the project: alembic.ini and alembic/ copied to tmp."""
    copy = copy_scripts(project.tmp / "scripts")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    return copy


@pytest.fixture
def project_scripts(project):
    """Private scripts inside the project root (git-ignored), as a team's own alembic/ is."""
    with scripts_inside_project() as copy:
        project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
        yield copy


def created_path(stdout: str) -> str:
    match = re.search(r"^created (\S+\.py)$", stdout, re.M)
    assert match, f"no 'created <path>' line:\n{stdout}"
    return match[1]


@pytest.mark.parametrize("revision", [FIRST, None], ids=["behind", "base"])
def test_refuses_when_the_database_is_not_at_head(project, scripts, dev_url, revision):
    """--against-database compares with the live database: it must be at head (issue 18.2 made
    the history, which is always at head, the default comparison)."""
    if revision:
        prepare(project, dev_url, revision)
    elif dev_url.startswith("sqlite:///"):
        Path(dev_url.removeprefix("sqlite:///")).touch()  # an empty database, at base
    project.setenv("DATABASE_URL_DEVELOPMENT", dev_url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", CHANGED)
    files = scripts.files()

    result = project.invoke(
        "dev.revision", "-m", "add audit notes", "--autogenerate", "--against-database"
    )

    assert_one_line_error(result, ExitCode.REFUSED, "not at head", HEAD)
    assert scripts.files() == files


def test_model_change_prints_the_file_and_one_line_per_operation(project, project_scripts, dev_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", prepare(project, dev_url, HEAD))
    project.setenv("INVOKE_MIGRATIONS_METADATA", CHANGED)
    files = project_scripts.files()

    result = project.invoke("dev.revision", "-m", "add audit notes", "--autogenerate")

    assert_ok(result)
    new = project_scripts.files() - files
    assert len(new) == 1
    printed = created_path(result.stdout)
    assert (ROOT / printed).resolve() == (project_scripts.versions / new.pop()).resolve()
    operations = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    assert "add_table audit_notes" in operations
    assert "add_column users.nickname" in operations
    assert not any(op.startswith("remove_") for op in operations), operations
    assert "WARNING" not in result.stderr
    source = (ROOT / printed).read_text()
    assert re.search(r"op\.create_table\(\s*['\"]audit_notes['\"]", source), source
    assert "nickname" in source
    assert project.log_records()[-1]["details"]["revision_file"].endswith(printed)

    # The revision is real: it applies, and afterwards the models and the database agree.
    assert_ok(project.invoke("dev.upgrade"))
    assert {"audit_notes", "users"} <= table_names(schema_snapshot(dev_url))
    assert_ok(project.invoke("dev.check"))


def test_dropped_table_is_a_loud_warning(project, scripts, dev_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", prepare(project, dev_url, HEAD))
    project.setenv("INVOKE_MIGRATIONS_METADATA", MISSING_TABLE)

    result = project.invoke("dev.revision", "-m", "oops", "--autogenerate")

    assert_ok(result)
    created_path(result.stdout)
    assert "remove_table memberships" in result.stdout
    warning = [line for line in result.stderr.splitlines() if "memberships" in line]
    assert warning, result.stderr
    assert "WARNING" in warning[0] and "DROPS" in warning[0]
    assert project.log_records()[-1]["details"]["drops"]


def test_no_changes_writes_no_file(project, scripts, dev_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", prepare(project, dev_url, HEAD))
    files = scripts.files()

    result = project.invoke("dev.revision", "-m", "nothing", "--autogenerate")

    assert_ok(result)
    assert "no revision written" in result.stdout
    assert scripts.files() == files


def test_without_autogenerate_an_empty_revision_is_written(project, scripts):
    url = prepare(project, sqlite_url(project.tmp / "dev.sqlite3"), HEAD)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)

    result = project.invoke("dev.revision", "-m", "data fix")

    assert_ok(result)
    source = (ROOT / created_path(result.stdout)).read_text()
    assert f'down_revision: str | Sequence[str] | None = "{HEAD}"' in source or HEAD in source
    assert "data fix" in source


def test_local_revision_works_too(project, scripts):
    url = prepare(project, sqlite_url(project.tmp / "local.sqlite3"), HEAD)
    project.setenv("DATABASE_URL_LOCAL", url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", CHANGED)

    result = project.invoke("local.revision", "-m", "add audit notes", "--autogenerate")

    assert_ok(result)
    assert "add_table audit_notes" in result.stdout


def test_message_is_required(project, scripts):
    project.setenv(
        "DATABASE_URL_DEVELOPMENT", prepare(project, sqlite_url(project.tmp / "d.sqlite3"))
    )
    files = scripts.files()

    result = project.invoke("dev.revision", "--autogenerate")

    assert_one_line_error(result, ExitCode.USAGE, "message")
    assert scripts.files() == files


def test_several_heads_refuse(project, scripts):
    url = sqlite_url(project.tmp / "d.sqlite3")
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    scripts.add_branch()
    assert_ok(project.invoke("dev.upgrade", "--rev", "heads"))
    files = scripts.files()

    result = project.invoke("dev.revision", "-m", "x", "--autogenerate")

    assert result.code != 0 and "Traceback" not in result.output
    assert "heads" in result.stderr
    assert scripts.files() == files
    assert sorted(version_rows(schema_snapshot(url))) == sorted([HEAD, "b0b0b0b0b0b0"])


def test_revision_with_scripts_outside_the_project(project, scripts):
    """migrations.alembic_ini may point anywhere; the printed path then is absolute."""
    project.setenv(
        "DATABASE_URL_DEVELOPMENT", prepare(project, sqlite_url(project.tmp / "d.sqlite3"))
    )

    result = project.invoke("dev.revision", "-m", "elsewhere")

    assert_ok(result)
    new = scripts.files() - {path.name for path in (ROOT / "alembic" / "versions").glob("*.py")}
    assert len(new) == 1
    assert Path(created_path(result.stdout)).resolve() == (scripts.versions / new.pop()).resolve()


@pytest.mark.hostile
def test_revision_refuses_the_reserved_id_base(project, users_chain, existing_sqlite_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", existing_sqlite_url)
    before = set(users_chain.scripts.versions.glob("*.py"))

    result = project.invoke("dev.revision", "-m", "x", "--empty", "--rev-id", "base")

    assert set(users_chain.scripts.versions.glob("*.py")) == before, result.output
    assert_one_line_error(result, ExitCode.USAGE, "--rev-id")
    assert project.invoke("dev.history").code == ExitCode.OK
