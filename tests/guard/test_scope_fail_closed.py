"""The scope check fails closed on URLs it used to misread (hostile round 2, breaks 3 and 7).

A development URL that lists several hosts reaches production when any of them is production's
server (libpq tries them in turn), and a production URL the tasks cannot use (a driver that is not
installed, a bad port, a misspelt scheme, a libpq keyword string) still says which database it
names. Each test runs `dev.stamp`, which rewrites `alembic_version`, the way a user would, and
checks that production's version row is untouched.
"""

from __future__ import annotations

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import (
    FIRST,
    HEAD,
    SECRET,
    assert_ok,
    assert_one_line_error,
    prepare,
    version_rows,
)


def parts(url: str) -> dict[str, str]:
    """The pieces of a throwaway database's URL to spell it other ways."""
    parsed = sqlalchemy.make_url(url)
    return {"user": parsed.username or "", "port": str(parsed.port or 5432), "db": parsed.database}


def stamp_as_dev(project):  # type: ignore[no-untyped-def]
    return project.invoke("dev.stamp", "--rev", FIRST, "--yes")


def assert_production_untouched(project, url: str, result) -> str:  # type: ignore[no-untyped-def]
    assert version_rows(schema_snapshot(url)) == [HEAD], result.output
    line = assert_one_line_error(result, ExitCode.REFUSED, "DATABASE_URL_PRODUCTION")
    assert SECRET not in result.output
    assert not project.log_file.exists() or SECRET not in project.log_file.read_text()
    return line


# --- break 3: a development URL with several hosts ----------------------------------------------

# Development spellings that list an unreachable host before production's server (NAME, USER and
# PORT filled in). libpq skips the first and connects to the second.
MULTI_HOST_DEV = {
    "host-part-empty-item": "postgresql+psycopg2://USER@nohost.invalid,,127.0.0.1:PORT/NAME",
    "query-host-list": "postgresql+psycopg2://USER@/NAME?host=nohost.invalid,127.0.0.1&port=PORT",
    "query-host-repeated": (
        "postgresql+psycopg2://USER@/NAME?host=nohost.invalid:PORT&host=127.0.0.1:PORT"
    ),
    "hostaddr-list": (
        "postgresql+psycopg2://USER@/NAME?host=a.invalid,b.invalid&hostaddr=192.0.2.1,127.0.0.1"
        "&port=PORT"
    ),
}


@pytest.mark.postgres
@pytest.mark.parametrize("spelling", sorted(MULTI_HOST_DEV))
def test_dev_on_a_host_list_that_includes_production_is_refused(project, pg_url, spelling):
    prepare(project, pg_url)
    p = parts(pg_url)
    dev = MULTI_HOST_DEV[spelling]
    dev = dev.replace("USER", p["user"]).replace("PORT", p["port"]).replace("NAME", p["db"])
    project.setenv("DATABASE_URL_PRODUCTION", pg_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", dev)

    assert_production_untouched(project, pg_url, stamp_as_dev(project))


@pytest.mark.postgres
def test_dev_on_a_pghost_list_that_includes_production_is_refused(project, pg_url):
    prepare(project, pg_url)
    p = parts(pg_url)
    project.setenv("PGHOST", "nohost.invalid,127.0.0.1")
    project.setenv("PGPORT", p["port"])
    project.setenv("DATABASE_URL_PRODUCTION", pg_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", f"postgresql+psycopg2://{p['user']}@/{p['db']}")

    assert_production_untouched(project, pg_url, stamp_as_dev(project))


# --- break 7: a production URL the tasks cannot use ---------------------------------------------

# Production spellings of the same database that the tasks cannot connect with (NAME, USER, PORT
# and the password SECRET filled in), each still readable: host, port and database are there.
UNUSABLE_PRODUCTION = {
    "bad-port": "postgresql://USER:SECRET@127.0.0.1:54x2/NAME",
    "misspelt-scheme": "postgresq1://USER:SECRET@127.0.0.1:PORT/NAME",
    "libpq-keywords": "host=127.0.0.1 port=PORT dbname=NAME user=USER password=SECRET",
    "libpq-host-list-with-ports": "postgresql://USER:SECRET@nohost.invalid:PORT,127.0.0.1:PORT/NAME",
    # the empty item is libpq's default unix socket: this machine's server
    "libpq-host-list-with-socket": "postgresql://USER:SECRET@nohost.invalid:PORT,,192.0.2.1:x/NAME",
    "async-driver-not-installed": "postgresql+asyncpg://USER:SECRET@localhost/NAME?x=1",
}


@pytest.mark.postgres
@pytest.mark.parametrize("spelling", sorted(UNUSABLE_PRODUCTION))
def test_dev_on_production_spelt_unusably_is_refused(project, pg_url, spelling):
    prepare(project, pg_url)
    p = parts(pg_url)
    prod = UNUSABLE_PRODUCTION[spelling].replace("SECRET", SECRET)
    prod = prod.replace("USER", p["user"]).replace("PORT", p["port"]).replace("NAME", p["db"])
    project.setenv("DATABASE_URL_PRODUCTION", prod)
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)

    line = assert_production_untouched(project, pg_url, stamp_as_dev(project))
    assert "://" not in line and "host=" not in line


@pytest.mark.postgres
def test_a_readable_production_keyword_string_on_another_database_is_no_match(project, pg_url):
    """Reading what can be read, not refusing everything: another database name is no match."""
    prepare(project, pg_url)
    p = parts(pg_url)
    project.setenv("DATABASE_URL_PRODUCTION", f"host=127.0.0.1 port={p['port']} dbname=t_other")
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)

    assert_ok(stamp_as_dev(project))

    assert version_rows(schema_snapshot(pg_url)) == [FIRST]


@pytest.mark.postgres
@pytest.mark.parametrize(
    "value", [f"not a url {SECRET}", f"host='127.0.0.1 password={SECRET}", "   "]
)
def test_a_production_value_nothing_can_be_read_of_counts_as_every_database(project, pg_url, value):
    prepare(project, pg_url)
    project.setenv("DATABASE_URL_PRODUCTION", value)
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)

    line = assert_production_untouched(project, pg_url, stamp_as_dev(project))

    assert "cannot be read" in line


@pytest.mark.postgres
def test_an_unset_production_variable_stays_no_match(project, pg_url):
    prepare(project, pg_url)
    project.monkeypatch.delenv("DATABASE_URL_PRODUCTION", raising=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)

    assert_ok(stamp_as_dev(project))

    assert version_rows(schema_snapshot(pg_url)) == [FIRST]


@pytest.mark.postgres
def test_dev_may_still_read_when_production_cannot_be_read(project, pg_url):
    """Reading is unguarded for shared environments; only changes are refused."""
    prepare(project, pg_url)
    project.setenv("DATABASE_URL_PRODUCTION", "not a url")
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)

    assert_ok(project.invoke("dev.current"))


@pytest.mark.postgres
def test_a_production_host_the_resolver_cannot_answer_for_may_be_any_server(project, pg_url):
    """A name no resolver can take (a 64-character label) says nothing about where it leads."""
    prepare(project, pg_url)
    p = parts(pg_url)
    host = "x" * 64 + ".example"
    project.setenv(
        "DATABASE_URL_PRODUCTION", f"postgresql://{p['user']}@{host}:{p['port']}/{p['db']}"
    )
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)

    assert_production_untouched(project, pg_url, stamp_as_dev(project))


# MariaDB spellings of production's database with a driver that is not installed (mysqlclient,
# mysql-connector) or a bad port: still the same server and database.
UNUSABLE_MARIADB = {
    "mysqldb": "mysql+mysqldb://root@127.0.0.1:3306/NAME",
    "connector": "mariadb+mysqlconnector://root@localhost/NAME",
    "bad-port": "mysql://root@127.0.0.1:33o6/NAME",
}


@pytest.mark.mysql
@pytest.mark.parametrize("spelling", sorted(UNUSABLE_MARIADB))
def test_mariadb_dev_on_production_spelt_unusably_is_refused(project, mysql_url, spelling):
    prepare(project, mysql_url)
    name = sqlalchemy.make_url(mysql_url).database
    project.setenv("DATABASE_URL_PRODUCTION", UNUSABLE_MARIADB[spelling].replace("NAME", name))
    project.setenv("DATABASE_URL_DEVELOPMENT", mysql_url)

    assert_production_untouched(project, mysql_url, stamp_as_dev(project))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://someone@localhost,192.0.2.10/app",
        "postgresql://someone@/app?host=/var/run/postgresql,192.0.2.10",
        "mysql+pymysql://someone@127.0.0.1,192.0.2.10/app",
    ],
    ids=["host-part", "query-host", "mysql-host-part"],
)
def test_a_local_host_list_with_one_remote_host_is_off_this_machine(project, url):
    """Every host of a list must be this machine's: libpq may reach any of them."""
    project.setenv("DATABASE_URL_LOCAL", url)

    result = project.invoke("local.upgrade")

    line = assert_one_line_error(result, ExitCode.REFUSED, "allow_remote", "192.0.2.10")
    assert "://" not in line


def test_a_local_host_list_of_loopback_names_is_this_machine(project):
    """Split, `localhost,127.0.0.1` is two names for this machine, not one unknown name."""
    project.setenv("DATABASE_URL_LOCAL", "postgresql://someone@localhost,127.0.0.1:9/app")
    project.setenv("INVOKE_MIGRATIONS_CONNECT_TIMEOUT", "1")

    result = project.invoke("local.current")

    assert "allow_remote" not in result.output  # past the guard: port 9 has no server
    assert result.code == ExitCode.FAILED, result.output


@pytest.mark.hostile
@pytest.mark.postgres
def test_dev_on_a_multi_host_url_that_reaches_production_is_refused(project, pg_url):
    prepare(project, pg_url)
    url = sqlalchemy.engine.make_url(pg_url)
    multi_host = (
        f"postgresql+psycopg2://{url.username}@nohost.invalid,{url.host}:{url.port}/{url.database}"
    )
    project.setenv("DATABASE_URL_PRODUCTION", pg_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", multi_host)

    result = project.invoke("dev.stamp", "--rev", FIRST, "--yes")

    assert version_rows(schema_snapshot(pg_url)) == [HEAD], result.output
    assert_one_line_error(result, ExitCode.REFUSED, "DATABASE_URL_PRODUCTION")


OTHER_DRIVERS = {
    # SQLAlchemy 2.1's own spelling for psycopg 3, not installed here
    "psycopg3-driver": "postgresql+psycopg",
    "pg8000-driver": "postgresql+pg8000",
}


@pytest.mark.hostile
@pytest.mark.postgres
@pytest.mark.parametrize("driver", OTHER_DRIVERS.values(), ids=OTHER_DRIVERS.keys())
def test_dev_on_production_named_with_another_driver_is_refused(project, pg_url, driver):
    prepare(project, pg_url)
    url = sqlalchemy.engine.make_url(pg_url)
    project.setenv("DATABASE_URL_PRODUCTION", url.set(drivername=driver).render_as_string(False))
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)

    result = project.invoke("dev.stamp", "--rev", FIRST, "--yes")

    assert version_rows(schema_snapshot(pg_url)) == [HEAD], result.output
    assert_one_line_error(result, ExitCode.REFUSED, "DATABASE_URL_PRODUCTION")
