"""fleet.* run through the installed `invoke` script, as a user's shell runs it: status and plan
end without a traceback, and a urls_file that is not text is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import ExitCode
from tests.helpers import assert_one_line_error, cli, prepare

pytestmark = pytest.mark.hostile


def fleet_file(project, body: str) -> Path:  # type: ignore[no-untyped-def]
    path = project.tmp / "fleet.yaml"
    path.write_text("migrations:\n  fleets:\n    tenants:\n" + body)
    return path


@pytest.mark.postgres
def test_fleet_status_runs_on_a_configured_fleet(project, pg_url):
    prepare(project, pg_url)
    config = fleet_file(project, f"      urls: ['{pg_url}']\n")

    result = cli(project, "-f", str(config), "fleet.status")

    assert "Traceback" not in result.output, result.output
    assert result.code == ExitCode.OK, result.output
    assert "at head" in result.stdout


@pytest.mark.postgres
def test_fleet_plan_ends_without_a_traceback(project, pg_url):
    prepare(project, pg_url)
    config = fleet_file(project, f"      urls: ['{pg_url}']\n")

    result = cli(project, "-f", str(config), "fleet.plan")

    assert "Traceback" not in result.output, result.output
    assert result.code == ExitCode.OK, result.output


@pytest.mark.postgres
def test_fleet_urls_file_that_is_not_text_is_one_line(project, pg_url):
    urls = project.tmp / "tenants.txt"
    urls.write_bytes(b"\xff\xfe\x00not text\n")
    config = fleet_file(project, f"      urls_file: {urls}\n")

    result = cli(project, "-f", str(config), "fleet.status")

    assert_one_line_error(result, ExitCode.USAGE, "urls_file")
