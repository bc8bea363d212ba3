"""Comparison options follow the project (issue 8): `migrations.compare` (hooks by import path,
type/default switches, `ignore` patterns) or an adopted env.py's own `context.configure`
options, the same for `revision --autogenerate`, `check` and `local.sync`.

The models come from this module through INVOKE_MIGRATIONS_METADATA; the database differs from
them in a few chosen ways (a server default, an expression index, a legacy table, a type).
"""

from __future__ import annotations

import textwrap

import pytest
import sqlalchemy as sa
import sqlalchemy.ext.compiler
from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, func, text

from tasks.core.comparison import Comparison, IgnoreRule, parse_ignore
from tasks.core.errors import ConfigError, ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, assert_one_line_error, copy_scripts

MODELS = "tests.schema.test_comparison:models"


def _accounts(metadata: MetaData, *, default: str, length: int, lower_index: bool) -> Table:
    table = Table(
        "accounts",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("email", String(length), nullable=False),
        Column("created_at", DateTime, server_default=text(default), nullable=True),
    )
    if lower_index:
        Index("ix_accounts_lower_email", func.lower(table.c.email))
    return table


def models() -> MetaData:
    """What the application says: a created_at default, a longer email, an expression index."""
    metadata = MetaData()
    _accounts(metadata, default="'2000-01-01 00:00:00'", length=200, lower_index=True)
    return metadata


def database() -> MetaData:
    """What the database has: another default, a shorter email, no index, a legacy table."""
    metadata = MetaData()
    _accounts(metadata, default="'1999-01-01 00:00:00'", length=100, lower_index=False)
    Table("legacy_audit", metadata, Column("id", Integer, primary_key=True))
    return metadata


def skip_legacy(obj, name, type_, reflected, compare_to) -> bool:
    """A team's include_object hook: tables named legacy_* belong to another application."""
    return not (type_ == "table" and str(name).startswith("legacy_"))


def skip_legacy_names(name, type_, parent_names) -> bool:
    return not (type_ == "table" and str(name).startswith("legacy_"))


@pytest.fixture
def url(project, pg_url) -> str:
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as connection:
            database().create_all(connection)
    finally:
        engine.dispose()
    project.setenv("DATABASE_URL_LOCAL", pg_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", MODELS)
    return pg_url


ALL_IGNORED = (
    "modify_default:*.created_at,add_index:ix_*_lower_*,modify_type:accounts.email,"
    "remove_table:legacy_*"
)


def test_without_configuration_every_difference_is_reported(project, url):
    checked = project.invoke("dev.check")
    assert checked.code == ExitCode.DIFFERENCES, checked.output
    for needle in (
        "modify_default accounts.created_at",
        "modify_type accounts.email",
        "add_index ix_accounts_lower_email",
        "remove_table legacy_audit",
    ):
        assert needle in checked.stdout, checked.stdout
    synced = project.invoke_alone("local.sync", "--check")
    assert synced.code == ExitCode.NEEDS_REVISION, synced.output
    assert "legacy_audit" in synced.stdout and "created_at" in synced.stdout


def test_ignore_patterns_silence_check_and_sync(project, url):
    project.setenv("INVOKE_MIGRATIONS_COMPARE_IGNORE", ALL_IGNORED)

    checked = project.invoke("dev.check")
    synced = project.invoke_alone("local.sync", "--check")

    assert_ok(checked)
    assert "models and database match" in checked.stdout
    assert synced.code == 0, synced.output
    assert "in sync with the models" in synced.stdout


def test_one_ignore_pattern_silences_only_its_difference(project, url):
    project.setenv("INVOKE_MIGRATIONS_COMPARE_IGNORE", "modify_default:*.created_at")

    checked = project.invoke("dev.check")

    assert checked.code == ExitCode.DIFFERENCES, checked.output
    assert "created_at" not in checked.stdout
    assert "modify_type accounts.email" in checked.stdout


def test_hooks_by_import_path_leave_tables_out_of_check_and_sync(project, url):
    project.setenv(
        "INVOKE_MIGRATIONS_COMPARE_INCLUDE_OBJECT", "tests.schema.test_comparison:skip_legacy"
    )
    project.setenv(
        "INVOKE_MIGRATIONS_COMPARE_INCLUDE_NAME", "tests.schema.test_comparison:skip_legacy_names"
    )
    project.setenv("INVOKE_MIGRATIONS_COMPARE_COMPARE_SERVER_DEFAULT", "false")
    project.setenv("INVOKE_MIGRATIONS_COMPARE_COMPARE_TYPE", "false")

    checked = project.invoke("dev.check")
    synced = project.invoke_alone("local.sync", "--check", "--json")

    assert checked.code == ExitCode.DIFFERENCES, checked.output
    (line,) = checked.stdout.strip().splitlines()
    assert line.startswith("add_index ix_accounts_lower_email"), checked.stdout
    assert synced.code == ExitCode.DIFFERENCES, synced.output
    assert '"legacy_audit"' not in synced.stdout
    assert "ix_accounts_lower_email" in synced.stdout


def test_autogenerate_writes_only_what_the_comparison_reports(project, url, tmp_path):
    copy = copy_scripts(tmp_path / "scripts")
    for revision in copy.versions.glob("*.py"):
        revision.unlink()
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv("INVOKE_MIGRATIONS_COMPARE_IGNORE", ALL_IGNORED)

    quiet = project.invoke("dev.revision", "-m", "nothing", "--autogenerate", "--against-database")

    assert_ok(quiet)
    assert "no revision written" in quiet.stdout
    assert copy.files() == set()
    project.setenv("INVOKE_MIGRATIONS_COMPARE_IGNORE", "modify_default:*.created_at")
    written = project.invoke("dev.revision", "-m", "email", "--autogenerate", "--against-database")
    assert_ok(written)
    (path,) = copy.versions.glob("*.py")
    body = path.read_text()
    assert "alter_column" in body and "email" in body
    assert "created_at" not in body
    assert "legacy_audit" in body  # only what was ignored is left out


ADOPTED_ENV = '''\
"""A third-party env.py in the cookbook's "Sharing a Connection" style."""
from alembic import context

from tests.schema.test_comparison import models, skip_legacy

config = context.config


def run_migrations_online():
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=models(),
        include_object=skip_legacy,
        compare_server_default=False,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
'''


def adopt(project, tmp_path) -> None:
    copy = copy_scripts(tmp_path / "adopted")
    for revision in copy.versions.glob("*.py"):
        revision.unlink()
    (copy.ini.parent / "alembic" / "env.py").write_text(textwrap.dedent(ADOPTED_ENV))
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))


def test_an_adopted_env_py_sets_the_comparison_options(project, url, tmp_path):
    adopt(project, tmp_path)

    checked = project.invoke("dev.check")
    synced = project.invoke_alone("local.sync", "--check")

    assert checked.code == ExitCode.DIFFERENCES, checked.output
    assert "legacy_audit" not in checked.stdout and "created_at" not in checked.stdout
    assert "modify_type accounts.email" in checked.stdout
    assert "legacy_audit" not in synced.stdout and "created_at" not in synced.stdout
    assert "email" in synced.stdout
    project.setenv("INVOKE_MIGRATIONS_COMPARE_FROM_ENV", "false")
    assert "legacy_audit" in project.invoke("dev.check").stdout


def test_an_env_py_that_cannot_run_is_one_line_naming_it(project, url, tmp_path):
    adopt(project, tmp_path)
    env_py = tmp_path / "adopted" / "alembic" / "env.py"
    env_py.write_text("raise RuntimeError('no database configured')\n")
    before = schema_snapshot(url)

    result = project.invoke_alone("local.sync")

    assert_one_line_error(result, ExitCode.USAGE, "env.py", "no database configured", "from_env")
    assert schema_snapshot(url) == before


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("INVOKE_MIGRATIONS_COMPARE_IGNORE", "created_at", "migrations.compare.ignore"),
        ("INVOKE_MIGRATIONS_COMPARE_IGNORE", "modify_colour:x.y", "modify_colour"),
        ("INVOKE_MIGRATIONS_COMPARE_INCLUDE_OBJECT", "tests.nowhere:hook", "include_object"),
        (
            "INVOKE_MIGRATIONS_COMPARE_RENDER_ITEM",
            "tests.schema.test_comparison:MODELS",
            "render_item",
        ),
        ("INVOKE_MIGRATIONS_COMPARE_INCLUDE_SCHEMAS", "maybe", "include_schemas"),
    ],
)
def test_bad_comparison_settings_are_one_line_and_change_nothing(
    project, url, variable, value, needle
):
    project.setenv(variable, value)
    before = schema_snapshot(url)

    for argv in (("local.sync",), ("dev.check",)):
        assert_one_line_error(project.invoke_alone(*argv), ExitCode.USAGE, needle)
    assert schema_snapshot(url) == before


def test_ignore_rules_match_the_documented_targets():
    rules = parse_ignore("modify_default:*.created_at, add_index:ix_*_lower_*,remove_table:old_*")
    assert [rule.text for rule in rules] == [
        "modify_default:*.created_at",
        "add_index:ix_*_lower_*",
        "remove_table:old_*",
    ]
    default, index, table = rules
    assert default.matches("modify_default", "users", "created_at")
    assert not default.matches("modify_type", "users", "created_at")
    assert not default.matches("modify_default", "users", "updated_at")
    assert index.matches("add_index", "users", "ix_users_lower_email")
    assert not index.matches("remove_index", "users", "ix_users_lower_email")
    assert table.matches("remove_table", "old_users", None)
    assert IgnoreRule("add_fk", "orders.*", "add_fk:orders.*").matches("add_fk", "orders", "fk_x")
    with pytest.raises(ConfigError):
        parse_ignore(["modify_default"])
    with pytest.raises(ConfigError):
        parse_ignore("drop_everything:*")


class EncryptedString(sa.types.TypeDecorator):
    """A team's own column type, rendered into revisions through user_module_prefix."""

    impl = sa.String
    cache_ok = True


def models_with_custom_type() -> MetaData:
    metadata = MetaData()
    Table(
        "secrets",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("token", EncryptedString(1000)),
    )
    return metadata


def test_user_module_prefix_reaches_the_written_revision(project, tmp_path):
    copy = copy_scripts(tmp_path / "scripts")
    for revision in copy.versions.glob("*.py"):
        revision.unlink()
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv(
        "INVOKE_MIGRATIONS_METADATA", "tests.schema.test_comparison:models_with_custom_type"
    )
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{tmp_path / 'dev.sqlite3'}")
    project.setenv("INVOKE_MIGRATIONS_COMPARE_USER_MODULE_PREFIX", "myapp.types.")

    # A prefix naming no importable module writes a revision that could never run: refused.
    refused = project.invoke("dev.revision", "-m", "secrets", "--autogenerate")
    assert_one_line_error(refused, ExitCode.USAGE, "No module named 'myapp'")
    assert not list(copy.versions.glob("*.py"))

    project.setenv("INVOKE_MIGRATIONS_COMPARE_USER_MODULE_PREFIX", "tests.schema.test_comparison.")
    result = project.invoke("dev.revision", "-m", "secrets", "--autogenerate")

    assert_ok(result)
    (path,) = copy.versions.glob("*.py")
    written = path.read_text()
    assert "tests.schema.test_comparison.EncryptedString(length=1000)" in written
    assert "import tests.schema.test_comparison" in written  # the prefix's module, imported


def models_in_public() -> MetaData:
    metadata = MetaData()
    Table("accounts", metadata, Column("id", Integer, primary_key=True))
    return metadata


def test_include_schemas_compares_every_schema(project, pg_url):
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as connection:
            models_in_public().create_all(connection)
            connection.execute(text("CREATE SCHEMA scratch"))
            connection.execute(text("CREATE TABLE scratch.junk (id int PRIMARY KEY)"))
    finally:
        engine.dispose()
    project.setenv("DATABASE_URL_LOCAL", pg_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", "tests.schema.test_comparison:models_in_public")
    assert_ok(project.invoke("dev.check"))
    assert project.invoke_alone("local.sync", "--check").code == 0

    project.setenv("INVOKE_MIGRATIONS_COMPARE_INCLUDE_SCHEMAS", "true")
    checked = project.invoke("dev.check")
    synced = project.invoke_alone("local.sync", "--check")

    assert checked.code == ExitCode.DIFFERENCES, checked.output
    assert "remove_table junk" in checked.stdout
    assert synced.code == ExitCode.NEEDS_REVISION, synced.output
    assert "scratch.junk" in synced.stdout


class _DatabaseUuid(sa.sql.functions.FunctionElement):
    """An application's own default construct, rendered for PostgreSQL only (Prefect's
    GenerateUUID): it has no generic rendering."""

    type = sa.String()
    inherit_cache = True
    name = "database_uuid"


@sa.ext.compiler.compiles(_DatabaseUuid, "postgresql")
def _render_database_uuid(element, compiler, **kw):
    return "md5(random()::text)"


@pytest.mark.postgres
def test_a_default_only_its_dialect_renders_is_a_difference_not_a_crash(pg_url):
    """Regression: describing the modified default compiled it without a dialect, and
    `dev.check` crashed on Prefect's models instead of reporting the difference."""
    from tasks.schema import fast_diff

    metadata = MetaData()
    Table(
        "tokens",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("token", String(36), server_default=_DatabaseUuid()),
    )
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE tokens (id integer PRIMARY KEY, token varchar(36) DEFAULT 'x')"
            )
        with engine.connect() as connection:
            # An env.py's include_object (Prefect's) sends the comparison through Alembic's.
            comparison = Comparison(include_object=lambda *_args: True)
            changes = fast_diff.compare(connection, metadata, comparison=comparison)
    finally:
        engine.dispose()

    described = [(change.op, change.after) for change in changes]
    assert described == [("modify_default", "md5(random()::text)")], described
