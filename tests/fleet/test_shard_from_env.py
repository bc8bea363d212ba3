"""Issue 18, past one machine: `fleet.* --shard env:VARIABLE/N` takes this job's index from the
runner (a Kubernetes Indexed Job's JOB_COMPLETION_INDEX, a CI matrix's variable), from 0."""

from __future__ import annotations

import json

import pytest

from tasks.cli.fleet_tasks import shard_from_env
from tasks.core.errors import UsageError
from tests.fleet.test_fleet import fleet  # noqa: F401 - the fixture
from tests.helpers import assert_ok


def test_the_index_from_0_becomes_the_share_from_1(monkeypatch):
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    assert shard_from_env("env:JOB_COMPLETION_INDEX/4") == "1/4"
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert shard_from_env("env:JOB_COMPLETION_INDEX/4") == "4/4"
    assert shard_from_env("2/4") == "2/4" and shard_from_env(None) is None


@pytest.mark.parametrize(
    ("value", "shard", "needle"),
    [
        (None, "env:JOB_COMPLETION_INDEX/4", "is not set"),
        ("4", "env:JOB_COMPLETION_INDEX/4", "0 to 3"),
        ("one", "env:JOB_COMPLETION_INDEX/4", "'one'"),
        ("1", "env:JOB_COMPLETION_INDEX", "env:VARIABLE/N"),
    ],
)
def test_a_missing_or_wrong_index_is_one_line(monkeypatch, value, shard, needle):
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    if value is not None:
        monkeypatch.setenv("JOB_COMPLETION_INDEX", value)
    with pytest.raises(UsageError, match=needle):
        shard_from_env(shard)


def test_jobs_reading_their_index_cover_every_target_once(fleet, monkeypatch):  # noqa: F811
    databases = fleet.create_databases(6)
    fleet.configure(dbs={"urls": [fleet.url(name) for name in databases]})

    seen: list[str] = []
    for index in range(3):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
        result = fleet.invoke("fleet.status", "--shard", "env:JOB_COMPLETION_INDEX/3", "--json")
        assert_ok(result)
        seen += [row["name"] for row in json.loads(result.stdout)["targets"]]

    assert sorted(seen) == sorted(databases)
