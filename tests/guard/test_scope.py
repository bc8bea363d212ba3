"""Issue 11, item 2: a task never reaches another environment's database around its guards.

`DATABASE_URL_LOCAL=$DATABASE_URL_PRODUCTION invoke local.reset --yes`, run by a non-owner, used to
empty production, its audit table included. Now every task whose database is (by host, port and
database, or by the SQLite file itself) the database of an environment with stricter guards is
refused with one line naming both environments, before anything connects; a local URL off this
machine is refused unless `environments.local.allow_remote` is true.
"""

from __future__ import annotations

import json
import os

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import (
    APP_TABLES,
    FIRST,
    HEAD,
    SECRET,
    assert_ok,
    assert_one_line_error,
    copy_scripts,
    prepare,
    sqlite_url,
    table_names,
    version_rows,
)

OWNER = "lead@example.com"
INTRUDER = "intern@example.com"

# Every local task that resolves a database, with arguments that would change it where it can.
LOCAL_TASKS = [
    ("reset", "--yes"),
    ("sync",),
    ("sync", "--check"),
    ("restore", "--file", "backup.dump", "--yes"),
    ("backup",),
    ("upgrade",),
    ("downgrade", "--rev", "base", "--yes"),
    ("stamp", "--rev", "base", "--yes"),
    ("current",),
    ("history",),
    ("plan",),
    ("check",),
    ("preflight",),
    ("audit",),
    ("repair", "--rev", "base", "--accept-edit", "--reason", "scope test", "--yes"),
]


def production_with_history(project, url: str) -> str:
    """Production at head with one audit row and one user, the way an owner would leave it."""
    prepare(project, url, FIRST)
    project.setenv("DATABASE_URL_PRODUCTION", url)
    project.setenv("INVOKE_MIGRATIONS_OWNERS", OWNER)
    project.setenv("MIGRATIONS_OPERATOR", OWNER)
    assert_ok(project.invoke("prod.upgrade", "--yes", "--no-backup"))
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text("INSERT INTO users (email, display_name) VALUES ('a@x.org', 'A')")
            )
    finally:
        engine.dispose()
    project.setenv("MIGRATIONS_OPERATOR", INTRUDER)
    return url


def audit_rows(project) -> list[dict]:  # type: ignore[no-untyped-def]
    result = project.invoke("prod.audit", "--json")
    assert_ok(result)
    return json.loads(result.stdout)


def user_count(url: str) -> int:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text("SELECT count(*) FROM users")).scalar_one()
    finally:
        engine.dispose()


def assert_refused_naming_both(result, *names: str) -> str:  # type: ignore[no-untyped-def]
    line = assert_one_line_error(result, ExitCode.REFUSED, *names)
    assert "://" not in line  # neither URL is shown, masked or not
    return line


def as_host(url: str, host: str) -> str:
    """The same URL spelled with another host name for the same server."""
    return sqlalchemy.make_url(url).set(host=host).render_as_string(hide_password=False)


# --- the reported failure, on PostgreSQL --------------------------------------------------------


@pytest.mark.postgres
def test_local_reset_on_production_url_is_refused_and_audited_there(project, pg_url):
    prod = production_with_history(project, pg_url)
    before, audit_before = schema_snapshot(prod), audit_rows(project)
    project.setenv("DATABASE_URL_LOCAL", prod)

    result = project.invoke("local.reset", "--yes")

    line = assert_refused_naming_both(result, "local", "production")
    assert "DATABASE_URL_LOCAL" in line and "DATABASE_URL_PRODUCTION" in line
    assert schema_snapshot(prod) == before
    assert user_count(prod) == 1
    refused, *older = audit_rows(project)
    assert older == audit_before  # the existing trail is intact
    assert (refused["task"], refused["outcome"], refused["operator"]) == (
        "local.reset",
        "refused",
        INTRUDER,
    )
    logged = [r for r in project.log_records() if r.get("task") == "local.reset"]
    assert logged[-1]["outcome"] == "refused"


@pytest.mark.postgres
@pytest.mark.parametrize("argv", LOCAL_TASKS, ids=" ".join)
def test_every_local_task_is_refused_on_the_production_database(project, pg_url, argv):
    prod = production_with_history(project, pg_url)
    before = schema_snapshot(prod)
    # Another spelling of the same server: localhost for 127.0.0.1, default port left out.
    project.setenv("DATABASE_URL_LOCAL", as_host(prod, "localhost").replace(":5432/", "/"))

    result = project.invoke(f"local.{argv[0]}", *argv[1:])

    assert_refused_naming_both(result, "local", "production")
    assert schema_snapshot(prod) == before
    assert user_count(prod) == 1
    assert not project.backup_dir.exists() or not any(project.backup_dir.iterdir())


# Other spellings of the production database `postgresql+psycopg2://postgres@127.0.0.1:5432/NAME`
# (NAME filled in): other host names for this machine, the default socket, query parameters
# that override the URL, an async driver, upper case, and a URL the check cannot pin down.
SPELLINGS = {
    "localhost": "postgresql://postgres@localhost/NAME",
    "ipv6-loopback": "postgres://someone@[::1]:5432/NAME",
    "default-socket": "postgresql://postgres@/NAME",
    "socket-dir": "postgresql://postgres@/NAME?host=/var/run/postgresql",
    "query-dbname": "postgresql://postgres@127.0.0.1/t_scope_decoy?dbname=NAME",
    "query-port": "postgresql://postgres@localhost/NAME?port=5432",
    "async-upper": "postgresql+asyncpg://postgres@127.0.0.1:5432/UPPER",
    "service": "postgresql://postgres@127.0.0.1/postgres?service=anything",
}


@pytest.mark.postgres
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_other_spellings_of_the_production_database_are_refused(project, pg_url, spelling):
    prod = production_with_history(project, pg_url)
    name = sqlalchemy.make_url(prod).database
    url = SPELLINGS[spelling].replace("NAME", name).replace("UPPER", name.upper())
    project.setenv("DATABASE_URL_LOCAL", url)
    if spelling == "service":  # off this machine as far as anyone can tell: allowed, to reach
        project.setenv("INVOKE_MIGRATIONS_ENVIRONMENTS_LOCAL_ALLOW_REMOTE", "true")  # the match
    before = schema_snapshot(prod)

    result = project.invoke("local.reset", "--yes")

    assert_refused_naming_both(result, "local", "production")
    assert schema_snapshot(prod) == before
    assert user_count(prod) == 1


@pytest.mark.postgres
def test_libpq_variables_that_complete_the_url_count(project, pg_url):
    """`postgresql://postgres@` with PGHOST and PGDATABASE is production, as libpq reads it."""
    prod = production_with_history(project, pg_url)
    project.setenv("PGHOST", "127.0.0.1")
    project.setenv("PGDATABASE", sqlalchemy.make_url(prod).database)
    project.setenv("DATABASE_URL_LOCAL", "postgresql://postgres@")
    before = schema_snapshot(prod)

    result = project.invoke("local.reset", "--yes")

    assert_refused_naming_both(result, "local", "production")
    assert schema_snapshot(prod) == before
    assert user_count(prod) == 1


@pytest.mark.postgres
def test_this_machines_own_name_is_this_machine(project, pg_url):
    """A host name resolving to one of this machine's addresses is the same server."""
    import socket

    prod = production_with_history(project, pg_url)
    project.setenv("DATABASE_URL_PRODUCTION", as_host(prod, socket.gethostname()))
    project.setenv("DATABASE_URL_LOCAL", prod)

    result = project.invoke("local.stamp", "--rev", "base", "--yes")

    assert_refused_naming_both(result, "local", "production")
    assert version_rows(schema_snapshot(prod)) == [HEAD]


def test_every_local_task_that_uses_a_database_is_in_the_list():
    """A local task added later is covered here, or this fails."""
    from tests.task_matrix import discover

    listed = {argv[0] for argv in LOCAL_TASKS} | {"revision"}  # revision: its own test below
    using = {t.name for t in discover() if t.collection == "local" and t.needs_database}
    assert using <= listed, using - listed


@pytest.mark.postgres
def test_local_revision_on_the_production_database_is_refused(project, pg_url):
    prod = production_with_history(project, pg_url)
    scripts = copy_scripts(project.tmp / "scripts")  # a revision that slips through lands here
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(scripts.ini))
    project.setenv("MIGRATIONS_OPERATOR", OWNER)  # owners may write revisions: scope still holds
    project.setenv("DATABASE_URL_LOCAL", prod)
    files = scripts.files()

    result = project.invoke("local.revision", "-m", "sneaky", "--autogenerate")

    assert_refused_naming_both(result, "local", "production")
    assert scripts.files() == files


@pytest.mark.postgres
def test_local_on_the_development_database_is_refused_too(project, pg_url):
    """Shared, not only protected: dev's owners and audit apply to dev's database."""
    prepare(project, pg_url, HEAD)
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    project.setenv("DATABASE_URL_LOCAL", pg_url)
    before = schema_snapshot(pg_url)

    result = project.invoke("local.downgrade", "--rev", "base", "--yes")

    assert_refused_naming_both(result, "local", "development", "shared")
    assert schema_snapshot(pg_url) == before


@pytest.mark.postgres
def test_development_redirected_to_production_variable_is_refused(project, pg_url):
    prod = production_with_history(project, pg_url)
    before, audit_before = schema_snapshot(prod), audit_rows(project)
    project.setenv(
        "INVOKE_MIGRATIONS_ENVIRONMENTS_DEVELOPMENT_URL_VARIABLE", "DATABASE_URL_PRODUCTION"
    )
    project.setenv("MIGRATIONS_OPERATOR", OWNER)  # an owner too: dev's guards are not prod's

    for argv in (("downgrade", "--rev", "base", "--yes"), ("stamp", "--rev", "base", "--yes")):
        result = project.invoke(f"dev.{argv[0]}", *argv[1:])
        line = assert_refused_naming_both(result, "development", "production", "protected")
        assert "DATABASE_URL_PRODUCTION" in line

    assert schema_snapshot(prod) == before
    rows = audit_rows(project)
    assert rows[2:] == audit_before
    assert [(row["task"], row["outcome"]) for row in rows[:2]] == [
        ("dev.stamp", "refused"),
        ("dev.downgrade", "refused"),
    ]


@pytest.mark.postgres
def test_development_may_still_read_the_production_database(project, pg_url):
    """Reading is unguarded in every environment: only changes need the stricter guards."""
    prod = production_with_history(project, pg_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", prod)

    assert_ok(project.invoke("dev.current"))
    assert_ok(project.invoke("dev.upgrade", "--sql", "--rev", f"{FIRST}:head"))


@pytest.mark.postgres
def test_production_tasks_still_run_when_development_shares_its_database(project, pg_url):
    """The stricter environment's own tasks are never refused: prod's guards are the strictest."""
    prod = production_with_history(project, pg_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", prod)
    project.setenv("MIGRATIONS_OPERATOR", OWNER)

    assert_ok(project.invoke("prod.stamp", "--rev", FIRST, "--yes"))

    assert version_rows(schema_snapshot(prod)) == [FIRST]


@pytest.mark.postgres
def test_the_other_environments_passwords_never_show(project, pg_url):
    prod = production_with_history(project, pg_url)
    with_password = sqlalchemy.make_url(prod).set(password=SECRET)
    project.setenv("DATABASE_URL_PRODUCTION", with_password.render_as_string(hide_password=False))
    project.setenv("DATABASE_URL_LOCAL", prod)

    result = project.invoke("local.upgrade")

    assert_refused_naming_both(result, "local", "production")
    assert SECRET not in result.output
    assert SECRET not in project.log_file.read_text()


# --- SQLite: the file, whatever path leads to it ------------------------------------------------


@pytest.mark.parametrize("link", ["symlink", "hardlink", "dotted"])
def test_sqlite_paths_to_the_production_file_are_refused(project, link):
    prod = production_with_history(project, sqlite_url(project.tmp / "prod.sqlite3"))
    path = project.tmp / "prod.sqlite3"
    alias = project.tmp / "elsewhere" / "mine.sqlite3"
    alias.parent.mkdir()
    if link == "symlink":
        alias.symlink_to(path)
    elif link == "hardlink":
        os.link(path, alias)
    else:
        alias = project.tmp / "elsewhere" / ".." / "prod.sqlite3"
    before = schema_snapshot(prod)
    project.setenv("DATABASE_URL_LOCAL", sqlite_url(alias))

    result = project.invoke("local.reset", "--yes")

    assert_refused_naming_both(result, "local", "production")
    assert schema_snapshot(prod) == before
    assert user_count(prod) == 1
    assert audit_rows(project)[0]["task"] == "local.reset"


def test_production_url_from_its_dotenv_file_counts_too(project):
    prod = production_with_history(project, sqlite_url(project.tmp / "prod.sqlite3"))
    project.monkeypatch.delenv("DATABASE_URL_PRODUCTION")
    (project.dotenv_dir / ".env.production").write_text(f"DATABASE_URL_PRODUCTION={prod}\n")
    project.setenv("DATABASE_URL_LOCAL", prod)
    before = schema_snapshot(prod)

    result = project.invoke("local.sync")

    assert_refused_naming_both(result, "local", "production")
    assert schema_snapshot(prod) == before


def test_production_variable_redirected_away_still_counts(project):
    """Pointing production's url_variable at nothing does not hide DATABASE_URL_PRODUCTION."""
    prod = production_with_history(project, sqlite_url(project.tmp / "prod.sqlite3"))
    project.setenv("INVOKE_MIGRATIONS_ENVIRONMENTS_PRODUCTION_URL_VARIABLE", "NOT_SET_ANYWHERE")
    project.setenv("DATABASE_URL_LOCAL", prod)
    before = schema_snapshot(prod)

    result = project.invoke("local.reset", "--yes")

    assert_refused_naming_both(result, "local", "production", "DATABASE_URL_PRODUCTION")
    assert schema_snapshot(prod) == before
    assert user_count(prod) == 1


def test_sqlite_development_redirected_to_production_variable(project):
    prod = production_with_history(project, sqlite_url(project.tmp / "prod.sqlite3"))
    before = schema_snapshot(prod)
    project.setenv(
        "INVOKE_MIGRATIONS_ENVIRONMENTS_DEVELOPMENT_URL_VARIABLE", "DATABASE_URL_PRODUCTION"
    )
    project.setenv("MIGRATIONS_OPERATOR", OWNER)  # an owner too: dev's guards are not prod's

    result = project.invoke("dev.downgrade", "--rev", "base", "--yes")

    assert_refused_naming_both(result, "development", "production")
    assert schema_snapshot(prod) == before


def test_local_runs_when_other_environments_are_unset_or_elsewhere(project):
    """An unset variable of another environment is no match and no error."""
    project.monkeypatch.delenv("DATABASE_URL_STAGING", raising=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(project.tmp / "dev.sqlite3"))

    assert_ok(project.invoke("local.upgrade"))

    assert table_names(schema_snapshot(sqlite_url(project.tmp / "local.sqlite3"))) >= APP_TABLES


def test_local_is_refused_when_another_environments_url_cannot_be_read(project):
    """Nothing can be read of staging's value, so it may be any database: fail closed."""
    (project.dotenv_dir / ".env.staging").write_text("DATABASE_URL_STAGING=not a url\n")
    local = project.tmp / "local.sqlite3"

    result = project.invoke("local.upgrade")

    assert_one_line_error(result, ExitCode.REFUSED, "DATABASE_URL_STAGING", "cannot be read")
    assert not local.exists() or not table_names(schema_snapshot(sqlite_url(local)))


# --- MariaDB ------------------------------------------------------------------------------------


MARIADB_SPELLINGS = {
    "localhost-mariadb": "mariadb://root@localhost:3306/NAME",
    "socket": "mysql+pymysql://root@localhost/NAME?unix_socket=/run/mysqld/mysqld.sock",
    # Never the server's own `mysql` schema here: a guard regression would reset it.
    "query-db": "mysql+aiomysql://root@127.0.0.1/t_scope_decoy?db=NAME",
    "upper": "mysql://root@127.0.0.1/UPPER",
}


@pytest.mark.mysql
@pytest.mark.parametrize("spelling", sorted(MARIADB_SPELLINGS))
def test_mariadb_local_reset_on_the_production_database_is_refused(project, mysql_url, spelling):
    prod = production_with_history(project, mysql_url)
    name = sqlalchemy.make_url(prod).database
    url = MARIADB_SPELLINGS[spelling].replace("NAME", name).replace("UPPER", name.upper())
    project.setenv("DATABASE_URL_LOCAL", url)
    before = schema_snapshot(prod)

    result = project.invoke("local.reset", "--yes")

    assert_refused_naming_both(result, "local", "production")
    assert schema_snapshot(prod) == before
    assert user_count(prod) == 1
    assert audit_rows(project)[0]["task"] == "local.reset"


@pytest.mark.mysql
def test_mariadb_development_redirected_to_production_variable(project, mysql_url):
    prod = production_with_history(project, mysql_url)
    before = schema_snapshot(prod)
    project.setenv(
        "INVOKE_MIGRATIONS_ENVIRONMENTS_DEVELOPMENT_URL_VARIABLE", "DATABASE_URL_PRODUCTION"
    )
    project.setenv("MIGRATIONS_OPERATOR", OWNER)  # an owner too: dev's guards are not prod's

    for argv in (("stamp", "--rev", "base", "--yes"), ("upgrade", "--rev", FIRST)):
        result = project.invoke(f"dev.{argv[0]}", *argv[1:])
        assert_refused_naming_both(result, "development", "production")

    assert schema_snapshot(prod) == before


# --- a local URL stays on this machine ----------------------------------------------------------

REMOTE = "postgresql://someone@192.0.2.10:5432/app"  # TEST-NET-1: never this machine


@pytest.mark.parametrize(
    "url",
    [
        REMOTE,
        "mysql+pymysql://someone@db.example.com/app",
        "postgresql://someone@127.0.0.1/app?host=192.0.2.10",
        "mysql+pymysql://someone@localhost/app?read_default_file=/etc/other.cnf",
    ],
    ids=["postgresql", "mysql", "query-host", "option-file"],
)
@pytest.mark.parametrize("task", ["upgrade", "reset", "current"])
def test_a_remote_local_url_is_refused(project, url, task):
    project.setenv("DATABASE_URL_LOCAL", url)

    result = project.invoke(f"local.{task}", *(["--yes"] if task == "reset" else []))

    line = assert_one_line_error(result, ExitCode.REFUSED, "allow_remote", "not this machine")
    assert "://" not in line


def test_allow_remote_lets_a_remote_local_url_through(project):
    project.setenv("DATABASE_URL_LOCAL", REMOTE)
    project.setenv("INVOKE_MIGRATIONS_ENVIRONMENTS_LOCAL_ALLOW_REMOTE", "true")
    project.setenv("INVOKE_MIGRATIONS_CONNECT_TIMEOUT", "1")

    result = project.invoke("local.current")

    # Past the guard: it tried the server, which is not there.
    assert result.code == ExitCode.FAILED, result.output
    assert "allow_remote" not in result.output


@pytest.mark.parametrize(
    ("value", "code"),
    [("false", ExitCode.REFUSED), ("no", ExitCode.REFUSED), ("maybe", ExitCode.USAGE)],
)
def test_allow_remote_is_parsed_strictly(project, value, code):
    """Invoke would cast "false" over a boolean default to True; the key is text, parsed here."""
    project.setenv("DATABASE_URL_LOCAL", REMOTE)
    project.setenv("INVOKE_MIGRATIONS_ENVIRONMENTS_LOCAL_ALLOW_REMOTE", value)

    result = project.invoke("local.current")

    assert_one_line_error(result, code, "allow_remote")
