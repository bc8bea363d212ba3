"""The basic round trip on both dialects: upgrade, current, check, downgrade."""

from __future__ import annotations

import pytest

from tests.conftest import schema_snapshot


@pytest.fixture(params=["sqlite", "postgresql"])
def dev_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dev.sqlite3'}"
    return request.getfixturevalue("pg_url")


def test_upgrade_then_downgrade_to_base(project, dev_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", dev_url)

    upgraded = project.invoke("dev.upgrade")
    assert upgraded.code == 0, upgraded.output
    assert {"users", "projects", "memberships"} <= set(schema_snapshot(dev_url))

    current = project.invoke("dev.current")
    assert current.code == 0 and "(head)" in current.stdout and "at head" in current.stdout

    assert project.invoke("dev.check").code == 0

    downgraded = project.invoke("dev.downgrade", "--rev", "base", "--yes")
    assert downgraded.code == 0, downgraded.output
    assert set(schema_snapshot(dev_url)) == {"alembic_version"}
