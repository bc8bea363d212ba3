"""The tests' PostgreSQL pool (tests/pg_databases.py) reuses a database only when it is as new:
every test relies on getting an empty database nobody else uses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy

from tests.conftest import POSTGRES_ADMIN_URL
from tests.pg_databases import READY, PgDatabases

pytestmark = pytest.mark.postgres

# What a test may leave behind, and whether the pool may then reuse the database.
LEFTOVERS = {
    "tables, a schema, a type, a function, an extension": (
        True,
        "CREATE TABLE t (id serial PRIMARY KEY); CREATE SCHEMA other; "
        "CREATE TABLE other.u (id int); CREATE TYPE mood AS ENUM ('a'); "
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'; "
        "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    ),
    "a database setting": (True, "ALTER DATABASE {name} SET work_mem = '8MB'"),
    "a large object": (False, "SELECT lo_create(0)"),
    "a comment on the database": (False, "COMMENT ON DATABASE {name} IS 'left behind'"),
    "a privilege granted on the database": (False, "GRANT CONNECT ON DATABASE {name} TO PUBLIC"),
}


@pytest.fixture
def pool(pg_server) -> Iterator[PgDatabases]:
    databases = PgDatabases(POSTGRES_ADMIN_URL)
    yield databases
    databases.close()


def _engine(name: str) -> sqlalchemy.Engine:
    url = sqlalchemy.make_url(POSTGRES_ADMIN_URL).set(database=name)
    return sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")


def _state(name: str) -> dict:
    """What a new database has none of, read without the pool's own check."""
    engine = _engine(name)
    try:
        with engine.connect() as connection:
            row = connection.exec_driver_sql(
                "SELECT d.oid, "
                "(SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')), "
                "(SELECT count(*) FROM pg_namespace WHERE nspname NOT IN "
                " ('pg_catalog', 'information_schema', 'pg_toast', 'public') "
                " AND nspname !~ '^pg_(toast_)?temp_'), "
                "(SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'), "
                "(SELECT count(*) FROM pg_largeobject_metadata), "
                "shobj_description(d.oid, 'pg_database'), d.datacl::text, "
                "(SELECT count(*) FROM pg_db_role_setting WHERE setdatabase = d.oid) "
                "FROM pg_database d WHERE d.datname = current_database()"
            ).one()
    finally:
        engine.dispose()
    oid, *rest = row
    keys = ["relations", "schemas", "extensions", "large objects", "comment", "acl", "settings"]
    return {"oid": oid, **dict(zip(keys, rest, strict=True))}


NEW = {"relations": 0, "schemas": 0, "extensions": 0, "large objects": 0, "comment": None,
       "acl": None, "settings": 0}  # fmt: skip


@pytest.mark.parametrize("leftover", sorted(LEFTOVERS))
def test_a_database_is_reused_only_when_it_is_as_new(pool, leftover: str):
    reusable, sql = LEFTOVERS[leftover]
    name = f"t_pool_probe_{uuid.uuid4().hex[:8]}"
    pool.take(name)
    first = _state(name)
    assert {key: value for key, value in first.items() if key != "oid"} == NEW
    engine = _engine(name)
    with engine.connect() as connection:
        connection.exec_driver_sql(sql.format(name=name))
    engine.dispose()
    pool.release(name)

    # The pool hands out what it made ahead first, then what it recycled.
    later = []
    for _ in range(READY + 2):
        again = f"t_pool_probe_{uuid.uuid4().hex[:8]}"
        pool.take(again)
        later.append(_state(again))
        pool.release(again)

    for state in later:
        assert {key: value for key, value in state.items() if key != "oid"} == NEW
    assert (first["oid"] in {state["oid"] for state in later}) is reusable
