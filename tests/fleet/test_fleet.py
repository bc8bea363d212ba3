"""`invoke fleet.*` on the real PostgreSQL server: many databases and schema-per-tenant.

Each target's revisions record themselves in its own `applied` counter table (see
tests/revision_chains.py), so a test can tell how often each revision really ran on each target.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tasks.fleet.targets import parse_shard, select_targets, shard_of
from tests.conftest import create_pg_database, drop_pg_database
from tests.helpers import SECRET, assert_ok, assert_one_line_error
from tests.revision_chains import Chain, counts, create_table, empty_chain, spawn

pytestmark = pytest.mark.postgres


class Fleet:
    """Throwaway databases (and schemas) plus an `invoke -f` file describing them as fleets."""

    def __init__(self, project, pg_server) -> None:  # type: ignore[no-untyped-def]
        self.project = project
        self.server = pg_server
        self.prefix = f"t_fleet_{uuid.uuid4().hex[:6]}"
        self.databases: list[str] = []
        self.file = project.tmp / "fleet.yaml"

    def create_databases(self, count: int) -> list[str]:
        names = [f"{self.prefix}_db{index:02d}" for index in range(count)]
        for name in names:
            create_pg_database(self.server, name)
        self.databases += names
        return names

    def url(self, database: str, *, password: bool = True) -> str:
        auth = f"postgres:{SECRET}" if password else "postgres"
        return f"postgresql://{auth}@127.0.0.1:5432/{database}"

    def create_schemas(self, count: int) -> tuple[str, list[str]]:
        database = f"{self.prefix}_schemas"
        create_pg_database(self.server, database)
        self.databases.append(database)
        names = [f"tenant_{index:03d}" for index in range(count)]
        self.execute(
            database, *(f'CREATE SCHEMA "{name}"' for name in names), "CREATE SCHEMA other"
        )
        return database, names

    def execute(self, database: str, *statements: str) -> None:
        engine = sqlalchemy.create_engine(driver_url(self.url(database, password=False)))
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sqlalchemy.text(statement))
        engine.dispose()

    def configure(self, **fleets: dict) -> None:
        self.file.write_text(json.dumps({"migrations": {"fleets": fleets}}))

    def invoke(self, *argv: str):  # type: ignore[no-untyped-def]
        return self.project.invoke("-f", str(self.file), *argv)

    def drop(self) -> None:
        for name in self.databases:
            drop_pg_database(self.server, name)


@pytest.fixture
def fleet(project, pg_server) -> Iterator[Fleet]:
    made = Fleet(project, pg_server)
    yield made
    made.drop()


@pytest.fixture
def chain(project) -> Chain:
    """Three revisions, each recording itself, the first creating the counter table."""
    made = empty_chain(project.tmp / "scripts").use(project)
    made.add("f00000000001", "first table", create_table("first"))
    made.add("f00000000002", "second table", create_table("second"))
    return made


def driver_url(url: str) -> str:
    """SQLAlchemy 2.1 reads a plain postgresql:// as psycopg 3; the project installs psycopg2."""
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def counts_on(fleet: Fleet, database: str, schema: str | None = None) -> dict[str, int]:
    url = driver_url(fleet.url(database, password=False))
    if schema is None:
        return counts(url)
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text(f'SELECT revision, count(*) FROM "{schema}".applied GROUP BY revision')
        )
        result = {revision: number for revision, number in rows}
    engine.dispose()
    return result


def versions_on(fleet: Fleet, database: str, schema: str | None = None) -> list[str]:
    engine = sqlalchemy.create_engine(driver_url(fleet.url(database, password=False)))
    table = f'"{schema}".alembic_version' if schema else "alembic_version"
    with engine.connect() as connection:
        try:
            rows = connection.execute(sqlalchemy.text(f"SELECT version_num FROM {table}"))
            found = [row[0] for row in rows]
        except sqlalchemy.exc.ProgrammingError:
            found = []
    engine.dispose()
    return found


def test_twenty_databases_and_thirty_schemas_to_head(fleet, chain):
    databases = fleet.create_databases(20)
    schema_db, schemas = fleet.create_schemas(30)
    fleet.project.setenv("FLEET_SCHEMAS_URL", fleet.url(schema_db))
    fleet.configure(
        dbs={"urls": [fleet.url(name) for name in databases]},
        tenants={"schemas": {"url_variable": "FLEET_SCHEMAS_URL", "like": "tenant_%"}},
    )

    for name in ("dbs", "tenants"):
        result = fleet.invoke("fleet.upgrade", "--fleet", name, "--parallel", "8")
        assert_ok(result)
        total = 20 if name == "dbs" else 30
        assert f"{total} targets: {total} ok, 0 failed" in result.stdout

    expected = dict.fromkeys(chain.ids[1:], 1)
    for database in databases:
        assert versions_on(fleet, database) == [chain.head]
        assert counts_on(fleet, database) == expected
    for schema in schemas:
        assert versions_on(fleet, schema_db, schema) == [chain.head]
        assert counts_on(fleet, schema_db, schema) == expected
    assert versions_on(fleet, schema_db, "other") == []  # not matched by the pattern
    # Each target has its own audit row and run-log line.
    finished = [r for r in fleet.project.log_records() if r.get("event") == "task finished"]
    assert len([r for r in finished if r["task"] == "fleet.upgrade"]) == 50
    engine = sqlalchemy.create_engine(driver_url(fleet.url(databases[0], password=False)))
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT environment, outcome FROM migration_audit")
        ).all()
    engine.dispose()
    assert rows == [(f"dbs:{databases[0]}", "ok")]

    status = fleet.invoke("fleet.status", "--fleet", "tenants", "--json")
    assert_ok(status)
    report = json.loads(status.stdout)
    assert report["summary"]["by_state"] == {"at head": 30}
    assert report["summary"]["by_revision"] == {chain.head: 30}
    assert {row["name"] for row in report["targets"]} == set(schemas)


def _fleet_with_one_conflict(fleet: Fleet, count: int = 6) -> tuple[list[str], str]:
    databases = fleet.create_databases(count)
    broken = databases[2]
    fleet.execute(broken, "CREATE TABLE second (id integer)")  # the second revision will fail
    fleet.configure(dbs={"urls": [fleet.url(name) for name in databases]})
    return databases, broken


def test_a_failing_target_stops_new_ones_by_default(fleet, chain):
    databases, broken = _fleet_with_one_conflict(fleet)

    result = fleet.invoke("fleet.upgrade", "--parallel", "1")

    assert result.code == ExitCode.FLEET_PARTIAL, result.output
    assert "Traceback" not in result.output
    assert f"FAILED      {broken}" in result.stdout
    assert "f00000000002 failed" in result.stdout and "already exists" in result.stdout
    assert "3 not started" in result.stdout
    assert [versions_on(fleet, name) for name in databases[:2]] == [[chain.head]] * 2
    assert versions_on(fleet, broken) == ["f00000000001"]
    assert all(versions_on(fleet, name) == [] for name in databases[3:])


def test_continue_on_error_then_a_rerun_completes_only_what_was_missing(fleet, chain):
    databases, broken = _fleet_with_one_conflict(fleet)

    result = fleet.invoke("fleet.upgrade", "--continue-on-error", "--json")

    assert result.code == ExitCode.FLEET_PARTIAL
    report = json.loads(result.stdout)
    statuses = {item["target"]: item["status"] for item in report["results"]}
    assert statuses.pop(broken) == "failed"
    assert set(statuses.values()) == {"ok"}

    fleet.execute(broken, "DROP TABLE second")
    rerun = fleet.invoke("fleet.upgrade", "--json")

    assert_ok(rerun)
    statuses = {item["target"]: item["status"] for item in json.loads(rerun.stdout)["results"]}
    assert statuses == {name: ("ok" if name == broken else "at head") for name in databases}
    for name in databases:
        assert counts_on(fleet, name) == {"f00000000001": 1, "f00000000002": 1}


def test_a_failing_canary_leaves_the_rest_untouched(fleet, chain):
    databases = fleet.create_databases(5)
    fleet.execute(databases[0], "CREATE TABLE first (id integer)")
    fleet.configure(dbs={"urls": [fleet.url(name) for name in databases]})

    result = fleet.invoke("fleet.upgrade", "--canary", "2", "--continue-on-error")

    assert result.code == ExitCode.FLEET_PARTIAL
    assert "3 not started" in result.stdout
    assert versions_on(fleet, databases[1]) == [chain.head]  # the other canary ran
    assert all(versions_on(fleet, name) == [] for name in databases[2:])


def test_two_fleet_runs_at_once_apply_each_revision_once_per_target(fleet, chain):
    databases = fleet.create_databases(6)
    fleet.configure(dbs={"urls": [fleet.url(name) for name in databases]})
    slow = "op.execute('SELECT pg_sleep(0.3)')"
    chain.add("f00000000003", "slow", slow)

    runners = [spawn("-f", str(fleet.file), "fleet.upgrade", "--parallel", "3") for _ in range(2)]
    outputs = [runner.communicate(timeout=240) for runner in runners]

    assert [runner.returncode for runner in runners] == [0, 0], outputs
    for name in databases:
        assert counts_on(fleet, name) == dict.fromkeys(chain.ids[1:], 1)


def test_shards_cover_every_target_exactly_once(fleet):
    databases = fleet.create_databases(12)
    fleet.configure(dbs={"urls": [fleet.url(name) for name in databases]})

    seen: list[str] = []
    for index in range(1, 4):
        result = fleet.invoke("fleet.status", "--shard", f"{index}/3", "--json")
        assert_ok(result)
        seen += [row["name"] for row in json.loads(result.stdout)["targets"]]

    assert sorted(seen) == sorted(databases)


def test_shard_partition_is_stable_and_total() -> None:
    from tasks.fleet.targets import Target

    targets = [Target(f"tenant_{index}", None) for index in range(500)]  # type: ignore[arg-type]
    shards = [select_targets(targets, shard=f"{index}/7") for index in range(1, 8)]
    names = [target.name for shard in shards for target in shard]
    assert sorted(names) == sorted(target.name for target in targets)
    assert all(shards)  # every shard gets work
    assert shard_of("tenant_42", 7) == shard_of("tenant_42", 7)
    assert parse_shard(" 2 / 5 ") == (2, 5)
    for bad in ("0/3", "4/3", "a/b", "3"):
        with pytest.raises(Exception, match="--shard"):
            parse_shard(bad)


def test_passwords_are_masked_in_every_output(fleet, chain):
    _fleet_with_one_conflict(fleet, count=3)
    outputs = [
        fleet.invoke("fleet.status"),
        fleet.invoke("fleet.status", "--json"),
        fleet.invoke("fleet.upgrade", "--continue-on-error"),
        fleet.invoke("fleet.upgrade", "--json"),
        fleet.invoke("fleet.plan"),
    ]
    for result in outputs:
        assert SECRET not in result.output
    assert "***" in outputs[1].stdout
    assert SECRET not in fleet.project.log_file.read_text()


def test_only_runs_the_named_targets(fleet, chain):
    databases = fleet.create_databases(3)
    fleet.configure(dbs={"urls": [fleet.url(name) for name in databases]})

    assert_ok(fleet.invoke("fleet.upgrade", "--only", databases[1]))

    assert [bool(versions_on(fleet, name)) for name in databases] == [False, True, False]
    unknown = fleet.invoke("fleet.upgrade", "--only", "nobody")
    assert_one_line_error(unknown, ExitCode.USAGE, "--only names no target", "nobody")


def test_urls_file_and_variables(fleet, chain):
    databases = fleet.create_databases(2)
    listing = fleet.project.tmp / "tenants.txt"
    listing.write_text(f"# tenants\n{fleet.url(databases[0])}\n\n${{FLEET_SECOND}}\n")
    fleet.project.setenv("FLEET_SECOND", fleet.url(databases[1]))
    fleet.configure(dbs={"urls_file": str(listing)})

    result = fleet.invoke("fleet.status", "--json")

    assert_ok(result)
    assert [row["name"] for row in json.loads(result.stdout)["targets"]] == databases


def test_query_reads_tenants_from_a_catalog(fleet, chain):
    databases = fleet.create_databases(3)
    catalog = databases[0]
    fleet.execute(
        catalog,
        "CREATE TABLE tenants (db text, active boolean)",
        f"INSERT INTO tenants VALUES ('{databases[1]}', true), ('{databases[2]}', false)",
    )
    fleet.project.setenv("FLEET_CATALOG", fleet.url(catalog))
    fleet.configure(
        dbs={
            "query": {"url_variable": "FLEET_CATALOG", "sql": "SELECT db FROM tenants WHERE active"}
        }
    )

    assert_ok(fleet.invoke("fleet.upgrade"))

    assert versions_on(fleet, databases[1]) == [chain.head]
    assert versions_on(fleet, databases[2]) == []


@pytest.mark.parametrize(
    ("fleets", "needle"),
    [
        ({"dbs": {"url": ["postgresql://x/y"]}}, "unknown key migrations.fleets.dbs.url"),
        ({"dbs": {}}, "needs one of urls, urls_file, query or schemas"),
        ({"dbs": {"schemas": {"url_variable": "NOPE_UNSET"}}}, "needs like"),
        ({"dbs": {"urls": ["not a url"]}}, "not a valid database URL"),
        ({"dbs": {"urls": ["${NOPE_UNSET}"]}}, "NOPE_UNSET is not set"),
        ({"a": {"urls": ["sqlite:///a.db"]}, "b": {"urls": ["sqlite:///b.db"]}}, "--fleet"),
        (
            {"dbs": {"urls": ["sqlite:///a.db"], "postgres_lock_timeout": "forever; x"}},
            "not a duration",
        ),
    ],
)
def test_bad_fleet_configuration_is_one_line(fleet, fleets, needle):
    fleet.configure(**fleets)

    result = fleet.invoke("fleet.status")

    assert_one_line_error(result, ExitCode.USAGE, needle)


def test_alembic_proxies_are_per_thread(tmp_path: Path) -> None:
    """Two migrations at once in one process, each on its own SQLite file."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    from tasks.core import alembic_internals as alembic_threads

    alembic_threads.install()
    import alembic.op as op

    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def migrate(path: Path, table: str) -> None:
        engine = sqlalchemy.create_engine(f"sqlite:///{path}")
        try:
            with engine.begin() as connection:
                context = MigrationContext.configure(connection)
                with Operations.context(context):
                    barrier.wait(timeout=10)  # both proxies installed at the same time
                    op.create_table(table, sqlalchemy.Column("id", sqlalchemy.Integer))
        except BaseException as error:
            errors.append(error)
        finally:
            engine.dispose()

    threads = [
        threading.Thread(target=migrate, args=(tmp_path / f"{name}.db", name)) for name in "ab"
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    for name in "ab":
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / name}.db")
        assert sqlalchemy.inspect(engine).get_table_names() == [name]
        engine.dispose()


def test_a_bad_schedule_is_refused_before_anything_is_read(fleet):
    fleet.configure(dbs={"urls": ["postgresql://postgres@127.0.0.1:1/unreachable"]})

    result = fleet.invoke("fleet.upgrade", "--canary", "-1")

    assert_one_line_error(result, ExitCode.USAGE, "--canary")
    assert result.stdout == ""


class ProbedFleet(Fleet):
    """test_fleet's throwaway databases and fleet file, plus what the probes read back."""

    def create(self, count: int) -> list[str]:
        return self.create_databases(count)

    def engine(self, database: str) -> sqlalchemy.Engine:
        return sqlalchemy.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}")

    def tables(self, database: str) -> set[tuple[str, str]]:
        engine = self.engine(database)
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text(
                    "SELECT schemaname, tablename FROM pg_tables "
                    "WHERE schemaname NOT LIKE 'pg\\_%' AND schemaname <> 'information_schema'"
                )
            )
            found = {(schema, name) for schema, name in rows}
        engine.dispose()
        return found


@pytest.fixture
def probed_fleet(project, pg_server) -> Iterator[ProbedFleet]:
    made = ProbedFleet(project, pg_server)
    yield made
    made.drop()


@pytest.mark.hostile
@pytest.mark.postgres
def test_only_never_migrates_targets_other_than_the_one_named(probed_fleet, users_chain):
    (database,) = probed_fleet.create(1)
    probed_fleet.execute(
        database, 'CREATE SCHEMA "t_a"', 'CREATE SCHEMA "t_b"', 'CREATE SCHEMA "t_a,t_b"'
    )
    probed_fleet.project.setenv("H3_SCHEMAS", probed_fleet.url(database))
    probed_fleet.configure(tenants={"schemas": {"url_variable": "H3_SCHEMAS", "like": "t\\_%"}})

    result = probed_fleet.invoke("fleet.upgrade", "--only", "t_a,t_b")

    tables = probed_fleet.tables(database)
    assert ("t_a,t_b", "users") in tables or result.code != ExitCode.OK, result.output
    assert ("t_a", "users") not in tables or result.code != ExitCode.OK, result.output


@pytest.mark.hostile
@pytest.mark.postgres
@pytest.mark.parametrize("only", ["", ",", " "])
def test_an_empty_only_selects_nothing_instead_of_everything(probed_fleet, users_chain, only):
    databases = probed_fleet.create(2)
    probed_fleet.configure(tenants={"urls": [probed_fleet.url(name) for name in databases]})

    result = probed_fleet.invoke("fleet.upgrade", "--only", only)

    for name in databases:
        assert ("public", "users") not in probed_fleet.tables(name), result.output
    assert_one_line_error(result, ExitCode.USAGE, "--only")


@pytest.mark.hostile
@pytest.mark.postgres
def test_an_empty_shard_is_refused_like_a_blank_one(probed_fleet, users_chain):
    databases = probed_fleet.create(2)
    probed_fleet.configure(tenants={"urls": [probed_fleet.url(name) for name in databases]})

    result = probed_fleet.invoke("fleet.upgrade", "--shard", "")

    for name in databases:
        assert ("public", "users") not in probed_fleet.tables(name), result.output
    assert_one_line_error(result, ExitCode.USAGE, "--shard")


@pytest.mark.hostile
@pytest.mark.postgres
def test_a_protected_schema_fleet_upgrade_takes_a_backup(probed_fleet, users_chain):
    (database,) = probed_fleet.create(1)
    probed_fleet.execute(database, 'CREATE SCHEMA "t_1"')
    probed_fleet.project.setenv("H3_SCHEMAS", probed_fleet.url(database))
    probed_fleet.configure(
        tenants={"schemas": {"url_variable": "H3_SCHEMAS", "like": "t\\_%"}, "protected": True}
    )

    result = probed_fleet.invoke("fleet.upgrade", "--yes")

    assert result.code == ExitCode.OK, result.output
    assert ("t_1", "users") in probed_fleet.tables(database)
    backups = (
        list(probed_fleet.project.backup_dir.glob("*"))
        if probed_fleet.project.backup_dir.exists()
        else []
    )
    assert backups, f"no backup of the protected database was taken:\n{result.output}"


@pytest.mark.hostile
@pytest.mark.postgres
@pytest.mark.parametrize("case", ["unknown revision", "plan failed"])
def test_fleet_plan_that_cannot_plan_a_target_does_not_exit_0(probed_fleet, users_chain, case):
    (database,) = probed_fleet.create(1)
    if case == "unknown revision":
        probed_fleet.execute(
            database,
            "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
            "INSERT INTO alembic_version VALUES ('deadbeef0000')",
        )
    probed_fleet.configure(tenants={"urls": [probed_fleet.url(database)]})
    argv = ["fleet.plan"] + (["--rev", "-1"] if case == "plan failed" else [])

    result = probed_fleet.invoke(*argv)

    assert case in result.output, result.output
    assert result.code != ExitCode.OK, result.output


@pytest.mark.hostile
@pytest.mark.postgres
def test_a_target_another_runner_upgraded_is_not_reported_as_migrated(probed_fleet, users_chain):
    from tasks.guard.lock import LOCK_NAME, _advisory_key
    from tests.revision_chains import spawn, wait_until

    (database,) = probed_fleet.create(1)
    probed_fleet.configure(tenants={"urls": [probed_fleet.url(database)]})
    engine = probed_fleet.engine(database)
    other = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    key = _advisory_key(LOCK_NAME)
    try:
        other.exec_driver_sql(f"SELECT pg_advisory_lock({key})")  # the other runner's lock
        runner = spawn("-f", str(probed_fleet.file), "fleet.upgrade", "--json")
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE '%%fleet.upgrade%%' AND query LIKE '%%pg_locks%%'"
        )

        def runner_waits() -> object:
            assert runner.poll() is None, runner.communicate()
            return other.exec_driver_sql(waiting).scalar()

        wait_until(runner_waits, what="the runner to wait for the lock")
        # What the other runner's upgrade does before it lets go of the lock.
        other.exec_driver_sql("CREATE TABLE users (id int PRIMARY KEY)")
        other.exec_driver_sql("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        other.exec_driver_sql(f"INSERT INTO alembic_version VALUES ('{users_chain.head}')")
        other.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")
        stdout, stderr = runner.communicate(timeout=120)
    finally:
        other.close()
        engine.dispose()

    assert runner.returncode == 0, stdout + stderr
    (result,) = json.loads(stdout)["results"]
    assert result["before"] == [users_chain.head], result
    assert result["status"] == "at head", result


@pytest.mark.hostile
@pytest.mark.postgres
def test_fleet_plan_shows_each_dialects_sql(probed_fleet, users_chain, existing_sqlite_url):
    (database,) = probed_fleet.create(1)
    users_chain.add(
        "b00000000002",
        "retype",
        'op.alter_column("users", "id", type_=sa.BigInteger, existing_type=sa.Integer)',
        record=False,
    )
    probed_fleet.configure(tenants={"urls": [probed_fleet.url(database), existing_sqlite_url]})
    sqlite_name = existing_sqlite_url.rsplit("/", 1)[-1].rsplit(".", 1)[0]

    result = probed_fleet.invoke("fleet.plan")

    assert f"tenants:{database}: at base" in result.output, result.output
    assert f"tenants:{sqlite_name}: at base" in result.output, result.output


FORGED = "t_a\n  ok          t_fake  base -> b00000000001 (0.1 s)"


@pytest.mark.hostile
@pytest.mark.postgres
@pytest.mark.parametrize("task", ["fleet.status", "fleet.upgrade"])
def test_a_schema_name_cannot_forge_lines_of_the_fleet_report(probed_fleet, users_chain, task):
    (database,) = probed_fleet.create(1)
    engine = probed_fleet.engine(database)
    with engine.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{FORGED}"')
        connection.exec_driver_sql('CREATE SCHEMA "t_b\x1b[1A\x1b[2K"')
    engine.dispose()
    probed_fleet.project.setenv("H3_SCHEMAS", probed_fleet.url(database))
    probed_fleet.configure(tenants={"schemas": {"url_variable": "H3_SCHEMAS", "like": "t\\_%"}})

    result = probed_fleet.invoke(task)

    assert result.code == ExitCode.OK, result.output
    lines = result.output.splitlines()
    assert not any(line.lstrip().startswith("ok          t_fake") for line in lines), lines
    assert "\x1b" not in result.output, repr(result.output)
