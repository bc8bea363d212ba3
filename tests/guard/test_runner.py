"""The guarded runner without Invoke: outcomes instead of exits, models loaded once per run."""

from __future__ import annotations

import sys

from tasks.core.errors import ExitCode, UsageError
from tasks.core.run_log import RunRecord
from tasks.core.settings import DEFAULTS, settings_from_mapping
from tasks.guard.runner import GuardedRun, TaskSpec
from tests.helpers import assert_ok
from tests.revision_chains import create_table, empty_chain

COUNTING_MODELS = """
from pathlib import Path

from database.imports import import_all_models


def counted():
    with Path(__file__).with_name("loads.txt").open("a") as log:
        log.write("loaded\\n")
    return import_all_models()
"""


def test_a_failed_operation_is_an_outcome_not_an_exit(project):
    settings = settings_from_mapping(
        {**DEFAULTS, "log_file": str(project.log_file)}, root=project.tmp
    )
    spec = TaskSpec("dev", "upgrade", changes_database=False, needs_database=False)

    def refuse(_session):
        raise UsageError("no such revision 'nope'")

    outcome = GuardedRun(spec, RunRecord("development", spec.name, {})).execute(settings, refuse)

    assert not outcome.ok
    assert outcome.exit_code == ExitCode.USAGE
    assert outcome.message == "dev.upgrade: no such revision 'nope'"
    assert outcome.error == "no such revision 'nope'"
    assert project.log_records()[-1]["outcome"] == "failed"


def test_the_models_are_loaded_once_per_upgrade(project, monkeypatch):
    models = project.tmp / "counting_models.py"
    models.write_text(COUNTING_MODELS)
    monkeypatch.syspath_prepend(str(project.tmp))
    sys.modules.pop("counting_models", None)
    project.setenv("INVOKE_MIGRATIONS_METADATA", "counting_models:counted")
    project.setenv("DATABASE_URL_PRODUCTION", f"sqlite:///{project.tmp / 'prod.sqlite3'}")
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("a00000000001", "one", create_table("one"))
    chain.add("a00000000002", "two", create_table("two"))

    # A protected upgrade renders the plan (offline, per revision), backs up, then applies.
    assert_ok(project.invoke("prod.upgrade", "--yes"))

    assert (project.tmp / "loads.txt").read_text().splitlines() == ["loaded"]


def test_the_lock_label_fits_whole_instead_of_being_cut():
    from tasks.guard.runner import LOCK_LABEL_LIMIT, lock_label

    short = lock_label("lead@example.com", "ci-7", "prod.upgrade", 4242)
    assert short == "lead@example.com@ci-7 prod.upgrade pid 4242"
    long_host = lock_label("lead@example.com", "h" * 60, "prod.upgrade", 4242)
    assert long_host == "lead@example.com prod.upgrade pid 4242"  # the host goes first
    long_mail = lock_label("someone.with.a.long.name@" + "d" * 40, "h", "staging.downgrade", 7)
    assert long_mail == "someone.with.a.long.name staging.downgrade pid 7"
    for label in (short, long_host, long_mail):
        assert len(label.encode()) <= LOCK_LABEL_LIMIT
