"""The README's commands as a newcomer types them, in a fresh clone of the repository.

Creating a virtualenv from scratch is too slow for the suite, so the clone gets a stand-in
`VENV` whose `bin/` is the running virtualenv's and whose requirement stamps are fresh: make
then skips pip and runs the same `invoke` a bare machine would have installed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Result
from tests.helpers import APP_TABLES


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """`git clone` of the repository's committed state, with a stand-in virtualenv."""
    base = tmp_path_factory.mktemp("readme")
    target = base / "repo"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(target)],
        check=True,
        capture_output=True,
    )
    venv = base / "venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.executable).parent)
    for stamp in (".runtime", ".dev"):
        (venv / stamp).touch()  # newer than the clone's requirements files
    return target


def make(clone: Path, *argv: str, environ: dict[str, str] | None = None) -> Result:
    env = dict(os.environ if environ is None else environ)
    env.pop("MAKEFLAGS", None)
    venv = clone.parent / "venv"
    completed = subprocess.run(
        ["make", "--no-print-directory", f"VENV={venv}", *argv],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


@pytest.mark.parametrize("argv", [(), ("help",)], ids=["default", "help"])
def test_make_help(project, clone, argv):
    result = make(clone, *argv)

    assert result.code == 0, result.output
    for target in ("sync", "sync-check", "upgrade", "downgrade", "current", "history", "test"):
        assert f"  {target} " in result.stdout, f"make help does not list {target}"


def test_make_sync_creates_the_local_sqlite_database(project, clone):
    """`make sync` on a fresh clone: the default SQLite file appears with the models' tables,
    and a second run finds nothing to do."""
    project.monkeypatch.delenv("DATABASE_URL_LOCAL")
    database = clone / "local.sqlite3"
    assert not database.exists()

    first = make(clone, "sync")

    assert first.code == 0, first.output
    assert "Traceback" not in first.output
    assert database.exists()
    assert tables(database) >= APP_TABLES

    second = make(clone, "sync")

    assert second.code == 0, second.output
    assert tables(database) >= APP_TABLES

    check = make(clone, "sync-check")
    assert check.code == 0, check.output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("upgrade", "ENV=qa"), "ENV must be one of"),
        (("current", "ENV=prodution"), "ENV must be one of"),
        (("downgrade", "ENV=dev"), "REV="),
        (("revision",), "MSG="),
    ],
)
def test_make_validates_its_variables(project, clone, argv, message):
    result = make(clone, *argv)

    assert result.code != 0
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_make_current_reports_a_missing_url(project, clone):
    result = make(clone, "current", "ENV=staging")

    assert result.code != 0
    assert "DATABASE_URL_STAGING" in result.stderr
    assert "Traceback" not in result.output
