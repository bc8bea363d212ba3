"""Configuration edges of adoption (issue 17): `package:folder` wherever a location is taken,
`path_separator = os`, and the documented precedence of `-f` files over variables."""

from __future__ import annotations

import sqlite3

import pytest

from tests.adopt.apps import make_shop
from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, sqlite_url, version_rows


@pytest.fixture
def dev_url(project) -> str:
    url = sqlite_url(project.tmp / "dev.sqlite3")
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    return url


def test_package_resource_in_the_ini(project, dev_url):
    make_shop(project, "cookbook", package_location=True)

    assert_ok(project.invoke_subprocess("dev.upgrade"))
    assert version_rows(schema_snapshot(dev_url)) == ["a3a3a3a3a3a3"]


def test_package_resource_in_migrations_script_location(project, dev_url):
    shop = make_shop(project, "cookbook")
    shop.ini.write_text(shop.ini.read_text().replace("%(here)s/migrations", "nowhere"))
    project.setenv("INVOKE_MIGRATIONS_SCRIPT_LOCATION", f"{shop.package}:migrations")

    assert_ok(project.invoke_subprocess("dev.upgrade"))
    assert version_rows(schema_snapshot(dev_url)) == ["a3a3a3a3a3a3"]


def test_package_resource_in_migrations_version_locations(project, dev_url):
    shop = make_shop(project, "cookbook")
    history = shop.folder / "history"
    (shop.folder / "migrations" / "versions").rename(history)
    (shop.folder / "migrations" / "versions").mkdir()
    project.setenv("INVOKE_MIGRATIONS_VERSION_LOCATIONS", f"{shop.package}:history")

    assert_ok(project.invoke_subprocess("dev.upgrade"))
    assert version_rows(schema_snapshot(dev_url)) == ["a3a3a3a3a3a3"]


def test_a_package_resource_is_found_without_running_the_package(project, dev_url):
    """Finding `pkg:migrations` must not import `pkg`: an application's package can take
    seconds to import (Prefect's does), paid by every command only to learn a folder's path.
    Reads that run no env.py (history, heads, current) leave the package unimported."""
    shop = make_shop(project, "cookbook", package_location=True)
    imported = project.tmp / "imported"
    (shop.folder / "__init__.py").write_text(f"open({str(imported)!r}, 'w').close()\n")
    sqlite3.connect(project.tmp / "dev.sqlite3").close()  # a read never creates the database

    for argv in (("dev.history",), ("dev.heads",), ("dev.current",)):
        assert_ok(project.invoke_subprocess(*argv))
        assert not imported.exists(), f"{argv[0]} imported the package to find its folder"


def test_package_resource_with_path_separator_os(project, dev_url):
    """`path_separator = os` splits on `:` on POSIX; `pkg:history` is one location still."""
    shop = make_shop(project, "cookbook")
    (shop.folder / "migrations" / "versions").rename(shop.folder / "history")
    (shop.folder / "migrations" / "versions").mkdir()
    extra = f"path_separator = os\nversion_locations = {shop.package}:history"
    shop.ini.write_text(
        shop.ini.read_text().replace("prepend_sys_path = .", f"prepend_sys_path = .\n{extra}")
    )

    assert_ok(project.invoke_subprocess("dev.upgrade"))
    assert version_rows(schema_snapshot(dev_url)) == ["a3a3a3a3a3a3"]


def test_a_dash_f_file_wins_over_variables(project, dev_url):
    """Invoke's order, as the README documents it: defaults, invoke.yaml, INVOKE_* variables,
    then a `-f` file; a key the file sets is not overridden by a variable."""
    make_shop(project, "cookbook")
    from_file = project.tmp / "from-file.jsonl"
    from_variable = project.tmp / "from-variable.jsonl"
    override = project.tmp / "override.yaml"
    override.write_text(f"migrations:\n  log_file: {from_file}\n")
    project.setenv("INVOKE_MIGRATIONS_LOG_FILE", str(from_variable))

    # the database exists first (a read never creates it), written under the file's settings
    assert_ok(project.invoke_subprocess("-f", str(override), "dev.upgrade"))
    assert_ok(project.invoke_subprocess("-f", str(override), "dev.current"))

    assert from_file.exists() and not from_variable.exists()
    assert_ok(project.invoke_subprocess("dev.current"))
    assert from_variable.exists()
