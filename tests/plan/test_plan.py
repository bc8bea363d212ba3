"""`<env>.plan [--rev] [--json]`: the pending revisions in order with their SQL and lint findings,
read-only; our classifier's destructive rules on every dialect and squawk's rule names on
PostgreSQL; rules silenced in configuration; downgrades linted the same way."""

from __future__ import annotations

import json

import pytest

from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, sqlite_url, version_rows
from tests.revision_chains import Chain, empty_chain

ACCOUNTS = """
op.create_table(
    "accounts",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("email", sa.Text, nullable=True),
    sa.Column("legacy", sa.Text, nullable=True),
)
"""
LOCK_HEAVY = """
op.create_index("ix_accounts_name", "accounts", ["name"])
op.add_column("accounts", sa.Column("score", sa.Integer, nullable=False))
"""
DESTRUCTIVE = """
op.drop_column("accounts", "legacy")
op.alter_column("accounts", "name", type_=sa.String(20), existing_type=sa.String(50))
op.alter_column("accounts", "email", nullable=False, existing_type=sa.Text)
"""
CLEAN = 'op.add_column("accounts", sa.Column("nickname", sa.Text, nullable=True))'


def accounts_chain(project) -> Chain:  # type: ignore[no-untyped-def]
    """base -> accounts -> lock-heavy -> destructive -> clean."""
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("d00000000001", "accounts", ACCOUNTS, record=False)
    chain.add("d00000000002", "index and required score", LOCK_HEAVY, record=False)
    chain.add("d00000000003", "drop legacy retype name", DESTRUCTIVE, record=False)
    chain.add("d00000000004", "nickname", CLEAN, record=False)
    return chain


def rules(item: dict) -> set[str]:
    return {finding["rule"] for finding in item["findings"]}


@pytest.fixture
def pg_dev(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    return pg_url


@pytest.mark.postgres
def test_plan_shows_each_pending_revision_with_its_sql_and_findings(project, pg_dev):
    chain = accounts_chain(project)
    assert_ok(project.invoke("dev.upgrade", "--rev", chain.ids[0]))
    before = schema_snapshot(pg_dev)

    result = project.invoke("dev.plan")

    assert_ok(result)
    out = result.stdout
    assert f"at {chain.ids[0]}" in out and "3 revisions to apply (target head)" in out
    positions = [out.index(revision) for revision in chain.ids[1:]]
    assert positions == sorted(positions)  # in the order they will run
    assert "index and required score" in out and "d00000000003_drop_legacy_retype_name.py" in out
    for rule in (
        "DESTRUCTIVE drop-column",
        "change-column-type",
        "set-not-null",
        "adding-required-field",
        "require-concurrent-index-creation",
    ):
        assert rule in out, rule
    assert "| ALTER TABLE accounts DROP COLUMN legacy;" in out
    assert "| CREATE INDEX ix_accounts_name ON accounts (name);" in out
    assert schema_snapshot(pg_dev) == before  # read-only


@pytest.mark.postgres
def test_plan_json_per_revision(project, pg_dev):
    chain = accounts_chain(project)
    assert_ok(project.invoke("dev.upgrade", "--rev", chain.ids[0]))

    result = project.invoke("dev.plan", "--json")

    assert_ok(result)
    plan = json.loads(result.stdout)
    assert plan["environment"] == "development" and plan["direction"] == "upgrade"
    assert plan["current"] == [chain.ids[0]] and plan["target"] == "head"
    heavy, destructive, clean = plan["revisions"]
    assert [heavy["revision"], destructive["revision"], clean["revision"]] == chain.ids[1:]
    assert heavy["message"] == "index and required score"
    assert heavy["file"].endswith("d00000000002_index_and_required_score.py")
    # Each revision's own SQL, not the whole run's.
    assert "CREATE INDEX ix_accounts_name" in heavy["sql"] and "DROP COLUMN" not in heavy["sql"]
    assert "DROP COLUMN legacy" in destructive["sql"] and "CREATE INDEX" not in destructive["sql"]
    assert {"adding-required-field", "require-concurrent-index-creation"} <= rules(heavy)
    # One finding per statement and rule: squawk's ban-drop-column and changing-column-type
    # are folded into ours, with squawk's help kept.
    consent = {f["rule"] for f in destructive["findings"] if f["severity"] != "warning"}
    assert consent == {"drop-column", "change-column-type", "set-not-null"}
    by_rule = {finding["rule"]: finding for finding in destructive["findings"]}
    assert by_rule["drop-column"]["severity"] == "destructive"
    assert by_rule["drop-column"]["source"] == "classifier+squawk"
    heavy_rules = {finding["rule"]: finding for finding in heavy["findings"]}
    index = heavy_rules["require-concurrent-index-creation"]
    assert index["source"] == "classifier+squawk"
    assert index["help"] == "Use `concurrently` to avoid blocking writes."  # squawk's help
    assert by_rule["drop-column"]["statement"] == "ALTER TABLE accounts DROP COLUMN legacy"
    assert by_rule["change-column-type"]["severity"] == "destructive"
    assert "ALTER COLUMN name TYPE" in by_rule["change-column-type"]["statement"]
    assert {finding["severity"] for finding in heavy["findings"]} == {"blocking"}
    assert rules(clean) == set()
    assert (plan["destructive"], plan["blocking"], plan["needs_consent"]) == (3, 2, 5)
    assert plan["summary"] == (
        "3 revisions, 6 statements: 3 destructive (drop column accounts.legacy, change type of "
        "accounts.name from varchar(50) to varchar(20), set not null accounts.email), 2 blocking "
        "(create index ix_accounts_name, add column accounts.score), 0 warnings"
    )


@pytest.mark.postgres
def test_plan_to_an_explicit_revision(project, pg_dev):
    chain = accounts_chain(project)

    result = project.invoke("dev.plan", "--rev", chain.ids[1], "--json")

    assert_ok(result)
    plan = json.loads(result.stdout)
    assert [item["revision"] for item in plan["revisions"]] == chain.ids[:2]
    assert plan["current"] == [] and plan["target"] == chain.ids[1]


@pytest.mark.postgres
def test_plan_at_head_has_nothing_pending(project, pg_dev):
    accounts_chain(project)
    assert_ok(project.invoke("dev.upgrade"))

    text = project.invoke("dev.plan")
    as_json = project.invoke("dev.plan", "--json")

    assert_ok(text)
    assert "0 revisions to apply" in text.stdout
    assert json.loads(as_json.stdout)["revisions"] == []


@pytest.mark.postgres
def test_rules_silenced_in_configuration_are_not_reported(project, pg_dev):
    chain = accounts_chain(project)
    assert_ok(project.invoke("dev.upgrade", "--rev", chain.ids[0]))
    override = project.tmp / "quiet.yaml"
    override.write_text(
        "migrations:\n  lint:\n    ignore: [drop-column, require-concurrent-index-creation]\n"
    )

    result = project.invoke("-f", str(override), "dev.plan", "--json")

    assert_ok(result)
    found = set().union(*(rules(item) for item in json.loads(result.stdout)["revisions"]))
    assert "drop-column" not in found and "require-concurrent-index-creation" not in found
    assert {"change-column-type", "adding-required-field"} <= found
    assert "ban-drop-column" not in found  # squawk's name for the same hazard, silenced too


@pytest.mark.postgres
def test_concurrent_index_in_an_autocommit_block_is_not_flagged(project, pg_dev):
    chain = accounts_chain(project)
    assert_ok(project.invoke("dev.upgrade", "--rev", chain.ids[0]))
    chain.add(
        "d00000000005",
        "concurrent index",
        """
        with op.get_context().autocommit_block():
            op.create_index(
                "ix_accounts_email", "accounts", ["email"], postgresql_concurrently=True
            )
        """,
        down_revision=chain.ids[0],
        record=False,
    )

    result = project.invoke("dev.plan", "--rev", "d00000000005", "--json")

    assert_ok(result)
    (item,) = json.loads(result.stdout)["revisions"]
    assert "CREATE INDEX CONCURRENTLY" in item["sql"]
    assert rules(item) == set()
    # ... and it really runs: the advisory lock is on its own connection.
    assert_ok(project.invoke("dev.upgrade", "--rev", "d00000000005"))
    assert version_rows(schema_snapshot(pg_dev)) == ["d00000000005"]
    assert "ix_accounts_email" in schema_snapshot(pg_dev)["accounts"]["indexes"]


@pytest.mark.postgres
def test_a_revision_that_reads_the_database_is_scanned_instead(project, pg_dev):
    chain = accounts_chain(project)
    assert_ok(project.invoke("dev.upgrade", "--rev", chain.ids[0]))
    chain.add(
        "d00000000006",
        "reads then drops",
        """
        if op.get_bind().execute(sa.text("SELECT count(*) FROM accounts")).scalar() == 0:
            op.drop_column("accounts", "legacy")
        """,
        down_revision=chain.ids[0],
        record=False,
    )

    result = project.invoke("dev.plan", "--rev", "d00000000006", "--json")

    assert_ok(result)
    (item,) = json.loads(result.stdout)["revisions"]
    assert item["rendered"] == "none" and item["render_error"]
    by_rule = {finding["rule"]: finding for finding in item["findings"]}
    assert by_rule["not-renderable"]["severity"] == "warning"
    assert by_rule["drop-column"]["severity"] == "destructive"
    assert by_rule["drop-column"]["source"] == "source"
    assert 'op.drop_column("accounts", "legacy")' in by_rule["drop-column"]["statement"]


@pytest.mark.postgres
def test_a_revision_that_runs_differently_online_is_scanned_as_well(project, pg_dev):
    chain = accounts_chain(project)
    assert_ok(project.invoke("dev.upgrade", "--rev", chain.ids[0]))
    chain.add(
        "d00000000006",
        "drops only online",
        """
        if not op.get_context().as_sql:
            op.drop_column("accounts", "legacy")
        """,
        down_revision=chain.ids[0],
        record=False,
    )

    result = project.invoke("dev.plan", "--rev", "d00000000006", "--json")

    assert_ok(result)
    (item,) = json.loads(result.stdout)["revisions"]
    assert item["rendered"] == "offline" and not item["render_error"]
    by_rule = {finding["rule"]: finding for finding in item["findings"]}
    assert by_rule["drop-column"]["severity"] == "destructive"
    assert by_rule["drop-column"]["source"] == "source"
    assert by_rule["drop-column"]["message"].startswith(
        "runs differently online than the SQL shown"
    )
    assert 'op.drop_column("accounts", "legacy")' in by_rule["drop-column"]["statement"]


@pytest.mark.postgres
@pytest.mark.parametrize("target", ["-1", "base", "d00000000002"])
def test_plan_towards_an_older_revision_is_the_downgrade(project, pg_dev, target):
    chain = accounts_chain(project)
    chain.add(
        "d00000000005",
        "drop nickname again",
        'op.drop_column("accounts", "nickname")',
        'op.add_column("accounts", sa.Column("nickname", sa.Text))',
        record=False,
    )
    assert_ok(project.invoke("dev.upgrade"))
    before = schema_snapshot(pg_dev)

    result = project.invoke("dev.plan", "--rev", target, "--json")

    assert_ok(result)
    plan = json.loads(result.stdout)
    assert plan["direction"] == "downgrade" and plan["target"] == target
    reverted = [item["revision"] for item in plan["revisions"]]
    assert reverted[0] == "d00000000005"
    assert reverted == list(reversed(chain.ids))[: len(reverted)]
    assert "ADD COLUMN nickname" in plan["revisions"][0]["sql"]
    assert schema_snapshot(pg_dev) == before


# --- SQLite ---------------------------------------------------------------------------------


@pytest.fixture
def sqlite_dev(project):
    url = sqlite_url(project.tmp / "dev.sqlite3")
    (project.tmp / "dev.sqlite3").touch()  # an empty database: a read never creates one
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    return url


def test_sqlite_plan_classifies_without_squawk(project, sqlite_dev):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("d10000000001", "accounts", ACCOUNTS, record=False)
    chain.add("d10000000002", "drop table", 'op.drop_table("accounts")', record=False)

    result = project.invoke("dev.plan", "--json")

    assert_ok(result)
    create, drop = json.loads(result.stdout)["revisions"]
    assert rules(create) == set()
    assert rules(drop) == {"drop-table"}
    assert all(finding["source"] == "classifier" for finding in drop["findings"])


BATCH_DROP = """
with op.batch_alter_table("accounts") as batch_op:
    batch_op.drop_column("legacy")
"""
BATCH_DROP_COPY_FROM = """
accounts = sa.Table(
    "accounts",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("email", sa.Text, nullable=True),
    sa.Column("legacy", sa.Text, nullable=True),
)
with op.batch_alter_table("accounts", copy_from=accounts) as batch_op:
    batch_op.drop_column("legacy")
"""


@pytest.mark.parametrize("body", [BATCH_DROP_COPY_FROM, BATCH_DROP], ids=["copy_from", "reflected"])
def test_sqlite_batch_rebuild_is_destructive(project, sqlite_dev, body):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("d20000000001", "accounts", ACCOUNTS, record=False)
    assert_ok(project.invoke("dev.upgrade"))
    chain.add("d20000000002", "batch drop legacy", body, record=False)
    before = schema_snapshot(sqlite_dev)

    result = project.invoke("dev.plan", "--json")

    assert_ok(result)
    (item,) = json.loads(result.stdout)["revisions"]
    assert "table-rebuild" in rules(item), item
    assert "_alembic_tmp_accounts" in item["sql"]
    assert schema_snapshot(sqlite_dev) == before


# --- downgrades -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_downgrade_shows_the_statements_that_lose_data(project, pg_dev):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("d30000000001", "accounts", ACCOUNTS, 'op.drop_table("accounts")', record=False)
    chain.add(
        "d30000000002",
        "nickname",
        CLEAN,
        'op.drop_column("accounts", "nickname")',
        record=False,
    )
    assert_ok(project.invoke("dev.upgrade"))

    result = project.invoke("dev.downgrade", "--rev", "base", "--yes", "--no-backup")

    assert_ok(result)
    out = result.stdout
    assert "2 revisions to revert (target base)" in out
    assert out.index("d30000000002") < out.index("d30000000001")
    assert "DESTRUCTIVE drop-column" in out and "DESTRUCTIVE drop-table" in out
    assert "ban-drop-column" not in out and "ban-drop-table" not in out  # folded into ours
    assert "| ALTER TABLE accounts DROP COLUMN nickname;" in out
    assert version_rows(schema_snapshot(pg_dev)) == []
