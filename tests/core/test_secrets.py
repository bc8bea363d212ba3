"""A password in a database URL never reaches the console, an error or the run log, whatever
path the run takes: success, driver errors, guards, offline SQL, plain `alembic`.

The local PostgreSQL trusts local connections, so a URL with a password connects and the
password is only there to be leaked."""

from __future__ import annotations

import sys
import uuid
from urllib.parse import quote

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tests.conftest import Result
from tests.helpers import FIRST, SECRET, prepare

pytestmark = pytest.mark.postgres

SPECIAL = "S3cr@t:/pw%?#"  # needs URL-quoting; must not leak raw or quoted


def with_password(url: str, password: str = SECRET, **changes) -> str:
    parsed = sqlalchemy.engine.make_url(url).set(**changes)
    rendered = parsed.set(password=None).render_as_string(hide_password=False)
    _scheme, rest = rendered.split("://", 1)
    user, host = rest.split("@", 1)
    return f"postgresql://{user}:{quote(password, safe='')}@{host}"


def assert_no_secret(project, result: Result, password: str = SECRET) -> None:
    spellings = {password, quote(password, safe=""), quote(password)}
    log = project.log_file.read_text() if project.log_file.exists() else ""
    for spelling in spellings:
        assert spelling not in result.stdout, f"password in stdout:\n{result.stdout}"
        assert spelling not in result.stderr, f"password in stderr:\n{result.stderr}"
        assert spelling not in log, "password in the run log"


@pytest.fixture
def dev(project, pg_url):
    url = with_password(pg_url)
    prepare(project, url, FIRST)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    return url


@pytest.mark.parametrize(
    "argv",
    [
        ("dev.current",),
        ("dev.history", "--verbose"),
        ("dev.heads",),
        ("dev.check",),
        ("dev.upgrade",),
        ("dev.upgrade", "--sql", "--rev", f"{FIRST}:head"),
        ("dev.stamp", "--rev", "base", "--yes"),
        ("dev.upgrade", "--rev", "nosuchrev"),
        ("dev.downgrade", "--rev", "base"),  # refused: no terminal, the message shows the URL
    ],
)
def test_no_password_on_ordinary_runs(project, dev, argv):
    result = project.invoke(*argv)

    assert "Traceback" not in result.output
    assert_no_secret(project, result)


def test_refusal_shows_the_url_masked(project, dev):
    project.setenv("DATABASE_URL_PRODUCTION", dev)

    result = project.invoke("prod.stamp", "--rev", "base")

    assert result.code == ExitCode.REFUSED
    assert ":***@" in result.stderr
    assert_no_secret(project, result)


def test_no_password_when_the_database_does_not_exist(project, pg_url):
    missing = f"t_missing_{uuid.uuid4().hex[:8]}"
    project.setenv("DATABASE_URL_DEVELOPMENT", with_password(pg_url, database=missing))

    result = project.invoke("dev.upgrade")

    assert result.code == ExitCode.FAILED
    assert missing in result.stderr and ":***@" in result.stderr
    assert_no_secret(project, result)


def test_no_password_when_the_port_is_closed(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", with_password(pg_url, port=9))

    result = project.invoke("dev.current")

    assert result.code == ExitCode.FAILED
    assert ":***@127.0.0.1:9" in result.stderr
    assert_no_secret(project, result)


def test_no_password_when_a_statement_fails(project, pg_url):
    """The database already has a `users` table Alembic does not know about."""
    engine = sqlalchemy.create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE users (id integer)"))
    engine.dispose()
    project.setenv("DATABASE_URL_DEVELOPMENT", with_password(pg_url))

    result = project.invoke("dev.upgrade")

    assert result.code == ExitCode.FAILED
    assert "users" in result.stderr and "Traceback" not in result.output
    assert_no_secret(project, result)


def test_no_password_with_characters_that_need_quoting(project, pg_url):
    url = with_password(pg_url, SPECIAL, port=9)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)

    result = project.invoke("dev.upgrade")

    assert result.code == ExitCode.FAILED
    assert_no_secret(project, result, SPECIAL)


def test_no_password_from_a_dotenv_file(project, pg_url):
    missing = f"t_missing_{uuid.uuid4().hex[:8]}"
    url = with_password(pg_url, database=missing)
    (project.dotenv_dir / ".env.development").write_text(f"DATABASE_URL_DEVELOPMENT={url}\n")

    result = project.invoke("dev.current")

    assert result.code == ExitCode.FAILED
    assert_no_secret(project, result)


def test_no_password_when_a_non_owner_is_refused(project, dev):
    project.setenv("INVOKE_MIGRATIONS_OWNERS", "lead@example.com")

    result = project.invoke("dev.upgrade")

    assert result.code == ExitCode.REFUSED
    assert_no_secret(project, result)


def test_no_password_in_an_unknown_driver_error(project):
    project.setenv("DATABASE_URL_DEVELOPMENT", f"nosuchdb://app:{SECRET}@127.0.0.1/db")

    result = project.invoke("dev.current")

    assert result.code == ExitCode.USAGE
    assert_no_secret(project, result)


def test_no_password_in_a_malformed_url_error(project):
    project.setenv("DATABASE_URL_DEVELOPMENT", f"postgresql://app:{SECRET}@127.0.0.1:port/db")

    result = project.invoke("dev.current")

    assert result.code == ExitCode.USAGE
    assert_no_secret(project, result)


@pytest.mark.parametrize("port", [None, 9])
def test_no_password_from_plain_alembic(project, pg_url, port):
    url = with_password(pg_url, **({"port": port} if port else {}))
    project.setenv("DATABASE_URL_DEVELOPMENT", url)

    result = project.run(sys.executable, "-m", "alembic", "current")

    assert (result.code == 0) == (port is None), result.output
    assert "Traceback" not in result.output
    assert_no_secret(project, result)
