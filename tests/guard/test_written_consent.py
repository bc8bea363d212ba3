"""Consent written in the revision (`consent = {"drop-column": "why"}`, in
tasks/plan/written_consent.py): reviewed with the file, shown by the plan, enough for
`prod.upgrade --yes`, recorded in the audit row with the file's hash; a careless entry is an
error (exit 2, one line)."""

from __future__ import annotations

import hashlib
import json

import pytest

from tasks.core.errors import ExitCode
from tests.helpers import assert_one_line_error
from tests.revision_chains import Chain, empty_chain, scalar

LEGACY = "b00000000001"
DROP = "b00000000002"


def chain_with_drop(project, consent: str, extra: str = "") -> Chain:  # type: ignore[no-untyped-def]
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add(
        LEGACY,
        "people",
        """
        op.create_table(
            "people", sa.Column("id", sa.Integer, primary_key=True), sa.Column("legacy", sa.Text)
        )
        op.execute("INSERT INTO people (id, legacy) VALUES (1, 'x')")
        """,
    )
    chain.add(DROP, "drop legacy", f'op.drop_column("people", "legacy")\n{extra}', record=False)
    path = next(chain.scripts.versions.glob(f"{DROP}_*.py"))
    source = path.read_text().replace("depends_on = None\n", f"depends_on = None\n{consent}\n")
    path.write_text(source)
    return chain


def revision_file(chain: Chain) -> bytes:
    return next(chain.scripts.versions.glob(f"{DROP}_*.py")).read_bytes()


@pytest.fixture(params=["sqlite", "postgresql"])
def prod_url(request, project, tmp_path) -> str:  # type: ignore[no-untyped-def]
    url = (
        f"sqlite:///{tmp_path / 'prod.sqlite3'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    project.setenv("DATABASE_URL_PRODUCTION", url)
    return url


def test_a_reviewed_drop_deploys_with_yes_alone_and_the_audit_keeps_why(project, prod_url):
    chain = chain_with_drop(project, 'consent = {"drop-column": "unused since release 4.2"}')

    result = project.invoke_subprocess("prod.upgrade", "--yes")

    assert result.code == ExitCode.OK, result.output
    shown = " ".join(result.stdout.split())  # the plan wraps to the terminal's width
    assert "consent in the revision: drop-column: unused since release 4.2" in shown
    assert "consent written in the revision: 1" in shown
    assert scalar(prod_url, "SELECT version_num FROM alembic_version") == DROP
    audit = project.invoke("prod.audit", "--json", "--limit", "1")
    (row,) = json.loads(audit.stdout)
    assert row["arguments"]["consent"] == "written in the revision"
    assert row["arguments"]["written_consent"] == [
        {
            "revision": DROP,
            "rule": "drop-column",
            "reason": "unused since release 4.2",
            "file_sha256": hashlib.sha256(revision_file(chain)).hexdigest(),
        }
    ]


def test_what_the_file_does_not_cover_still_needs_consent(project, prod_url):
    chain_with_drop(
        project,
        'consent = {"drop-column": "unused since release 4.2"}',
        'op.execute("DELETE FROM people")',
    )
    first = project.invoke_subprocess("prod.upgrade", "--yes", "-r", LEGACY)
    assert first.code == ExitCode.OK, first.output

    refused = project.invoke_subprocess("prod.upgrade", "--yes")

    line = assert_one_line_error(refused, ExitCode.REFUSED, "delete-rows")
    assert "drop-column" not in line
    assert scalar(prod_url, "SELECT count(*) FROM people") == 1

    allowed = project.invoke_subprocess("prod.upgrade", "--yes", "--allow-destructive")
    assert allowed.code == ExitCode.OK, allowed.output


@pytest.mark.parametrize(
    ("consent", "needle"),
    [
        ('consent = {"drop-colum": "typo"}', "'drop-colum', which is not a rule"),
        ('consent = {"drop-column": "  "}', "no reason"),
        ('consent = {"drop-column": "ok", "drop-table": "stale"}', "'drop-table' matches no"),
        ('consent = {"non-atomic-ddl": "x"}', "never needs consent"),
        ('consent = ["drop-column"]', "must be a dict"),
    ],
    ids=["unknown-rule", "empty-reason", "matches-nothing", "warning-rule", "not-a-dict"],
)
def test_a_careless_consent_entry_is_an_error(project, sqlite_url, consent, needle):
    import sqlite3

    chain_with_drop(project, consent)
    project.setenv("DATABASE_URL_PRODUCTION", sqlite_url)
    dev = project.tmp / "dev.sqlite3"
    sqlite3.connect(dev).close()  # an empty database: reads never create one
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{dev}")

    for task in ("dev.plan", "prod.upgrade"):
        result = project.invoke_subprocess(task, "--yes") if task == "prod.upgrade" else None
        result = result or project.invoke(task)
        assert_one_line_error(result, ExitCode.USAGE, f"{DROP}_", needle)
    assert not scalar(sqlite_url, "SELECT count(*) FROM sqlite_master WHERE name = 'people'")
