"""Throwaway PostgreSQL databases for the tests, made ahead of time and recycled when provably
pristine.

CREATE DATABASE copies template1 through the WAL and DROP DATABASE waits for the server: about
0.1 s of server CPU a pair, and the suite makes about 700 of them. A test's database is instead,
after the test, emptied (every schema dropped, `public` made again as template1 has it, its
settings and statistics reset) and then checked against what a new database holds: no object
of any kind past the bootstrap catalogs' oids but `public`, no setting, privilege, comment,
prepared transaction, slot or session. Only a database that passes goes back to the pool;
anything else (a session still open, an event trigger, a privilege granted then revoked) is
dropped as before. Every test still gets a database nobody else is using, empty as new.

The work runs in a process of its own per test worker (this file as a script), not in a thread:
the tasks set psycopg2's process-wide wait callback while they run, and a connection opened by
another thread meanwhile crashed the worker (a segfault inside psycopg2.connect).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import uuid
from collections import deque

FIRST_USER_OID = 16384  # PostgreSQL's FirstNormalObjectId: below are the bootstrap's objects
READY = 2

# Catalogs whose rows a test can add, counted past the bootstrap oids.
_BY_OID = (
    "pg_class", "pg_type", "pg_proc", "pg_extension", "pg_cast", "pg_language", "pg_operator",
    "pg_opfamily", "pg_opclass", "pg_collation", "pg_conversion", "pg_ts_config", "pg_ts_dict",
    "pg_ts_parser", "pg_ts_template", "pg_am", "pg_constraint", "pg_trigger", "pg_rewrite",
    "pg_policy", "pg_attrdef", "pg_statistic_ext",
)  # fmt: skip
# Catalogs a new database has no row in at all.
_EMPTY = (
    "pg_event_trigger", "pg_foreign_data_wrapper", "pg_foreign_server", "pg_user_mapping",
    "pg_publication", "pg_largeobject_metadata", "pg_default_acl", "pg_transform", "pg_seclabel",
)  # fmt: skip

LEFTOVERS = " + ".join(
    [
        *(f"(SELECT count(*) FROM {catalog} WHERE oid >= {FIRST_USER_OID})" for catalog in _BY_OID),
        *(f"(SELECT count(*) FROM {catalog})" for catalog in _EMPTY),
        f"(SELECT count(*) FROM pg_namespace WHERE oid >= {FIRST_USER_OID} AND nspname <> "
        "'public' AND nspname !~ '^pg_(toast_)?temp_')",
        f"(SELECT count(*) FROM pg_description WHERE objoid >= {FIRST_USER_OID} AND NOT "
        "(classoid = 'pg_namespace'::regclass AND objoid = 'public'::regnamespace))",
        "(SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = current_database())",
        "(SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database())",
        "(SELECT count(*) FROM pg_replication_slots WHERE database = current_database())",
        "(SELECT count(*) FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
        "WHERE d.datname = current_database())",
        "(SELECT count(*) FROM pg_shdescription c JOIN pg_database d ON d.oid = c.objoid "
        "WHERE c.classoid = 'pg_database'::regclass AND d.datname = current_database())",
        "(SELECT count(*) FROM pg_shseclabel c JOIN pg_database d ON d.oid = c.objoid "
        "WHERE c.classoid = 'pg_database'::regclass AND d.datname = current_database())",
    ]
)

# What describes the database and its `public` schema: equal to a new database's, or no reuse.
SHAPE = (
    "SELECT d.datacl::text, d.datconnlimit, d.datallowconn, d.datistemplate, "
    "pg_get_userbyid(d.datdba), d.dattablespace, n.nspacl::text, pg_get_userbyid(n.nspowner), "
    "obj_description(n.oid, 'pg_namespace') "
    "FROM pg_database d, pg_namespace n "
    "WHERE d.datname = current_database() AND n.nspname = 'public'"
)

EMPTY_IT = """
DO $$
DECLARE name text;
BEGIN
  FOR name IN SELECT nspname FROM pg_namespace
      WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
        AND nspname !~ '^pg_(toast_)?temp_'
  LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', name);
  END LOOP;
END $$;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
COMMENT ON SCHEMA public IS 'standard public schema';
SELECT pg_stat_reset();
"""


class PgDatabases:
    """A test worker's client of its pool process: `take` a database under a name, `release`
    it after the test."""

    def __init__(self, admin_url: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__, admin_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            # Started during some test: libpq variables that test set are not the pool's.
            env={name: value for name, value in os.environ.items() if not name.startswith("PG")},
        )

    def take(self, name: str) -> str:
        """An empty database nobody uses, renamed NAME."""
        answer = self._ask(f"take {name}")
        if answer != "ok":
            raise RuntimeError(f"no PostgreSQL database for the test: {answer}")
        return name

    def release(self, name: str) -> None:
        """Back to the pool if it can be made as new, dropped otherwise (in the background)."""
        self._tell(f"release {name}")

    def close(self) -> None:
        """Drop what is pooled, and wait for every drop."""
        with contextlib.suppress(OSError, ValueError):
            self._ask("close")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=120)

    def _tell(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def _ask(self, line: str) -> str:
        self._tell(line)
        assert self._process.stdout is not None
        return self._process.stdout.readline().strip() or "the pool process ended"


# --- the pool process ----------------------------------------------------------------------


class _Pool:
    """Made-ahead databases, recycled ones, and the jobs that make them, in one process."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy.engine import make_url

        self._server = make_url(admin_url).set(drivername="postgresql")  # libpq's spelling
        self._admin = self._connect(self._server.database or "postgres")
        self.ready: deque[str] = deque()
        self.jobs: deque[tuple[str, str]] = deque(("create", _pool_name()) for _ in range(READY))
        self._new_shape: tuple | None = None

    def take(self, name: str) -> None:
        while not self.ready and self.jobs:
            self.run_job()
        made = self.ready.popleft() if self.ready else self._create(_pool_name())
        self._execute(f'ALTER DATABASE "{made}" RENAME TO "{name}"')
        if len(self.ready) + len(self.jobs) < READY:
            self.jobs.append(("create", _pool_name()))

    def run_job(self) -> None:
        verb, name = self.jobs.popleft()
        try:
            if verb == "create":
                self.ready.append(self._create(name))
            elif self._made_as_new(name):
                pooled = _pool_name()
                self._execute(f'ALTER DATABASE "{name}" RENAME TO "{pooled}"')
                self.ready.append(pooled)
            else:
                self._drop(name)
        except Exception:  # a failed creation is made again by take(); no reuse on doubt
            with contextlib.suppress(Exception):  # one failed drop must not stop the others
                self._drop(name)

    def close(self) -> None:
        while self.jobs:
            self.run_job()
        while self.ready:
            with contextlib.suppress(Exception):
                self._drop(self.ready.popleft())
        self._admin.close()

    def _create(self, name: str) -> str:
        self._execute(f'CREATE DATABASE "{name}"')
        if self._new_shape is None:
            with contextlib.closing(self._connect(name)) as connection:
                self._new_shape = _one(connection, SHAPE)
        return name

    def _drop(self, name: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _made_as_new(self, name: str) -> bool:
        """Empty NAME as a new database is, and say whether it now provably is one."""
        with contextlib.closing(self._connect(name)) as connection:
            if _one(connection, OTHER_SESSIONS) != (0,):
                return False
            with connection.cursor() as cursor:  # no parameters: `%I` is SQL's
                cursor.execute(f'ALTER DATABASE "{name}" RESET ALL')
                cursor.execute(EMPTY_IT)
            leftovers = _one(connection, f"SELECT {LEFTOVERS}")
            shape = _one(connection, SHAPE)
        return leftovers == (0,) and shape == self._new_shape

    def _connect(self, database: str):  # -> psycopg2 connection
        import psycopg2

        url = self._server.set(database=database).render_as_string(hide_password=False)
        connection = psycopg2.connect(url)
        connection.autocommit = True
        return connection

    def _execute(self, statement: str) -> None:
        with self._admin.cursor() as cursor:
            cursor.execute(statement)


OTHER_SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def _one(connection, query: str) -> tuple:  # type: ignore[no-untyped-def]
    with connection.cursor() as cursor:
        cursor.execute(query)
        return tuple(cursor.fetchone())


def _pool_name() -> str:
    return f"t_pool_{uuid.uuid4().hex[:12]}"


def _serve(admin_url: str) -> None:
    """Answer `take NAME` at once; between commands, make and recycle databases ahead."""
    pool = _Pool(admin_url)
    received = b""  # read from the descriptor itself: a buffered stdin would hide a waiting line
    while True:
        if b"\n" not in received:
            waiting, _, _ = select.select([0], [], [], 0 if pool.jobs else None)
            if not waiting:
                pool.run_job()
                continue
            chunk = os.read(0, 4096)
            received += chunk if chunk else b"close\n"
            continue
        line, _, received = received.partition(b"\n")
        verb, _, name = line.decode().strip().partition(" ")
        if verb == "take":
            try:
                pool.take(name)
                print("ok", flush=True)
            except Exception as error:
                print(f"{type(error).__name__}: {error}".splitlines()[0], flush=True)
        elif verb == "release":
            pool.jobs.append(("recycle", name))
        else:  # close, or the test worker is gone
            pool.close()
            print("closed", flush=True)
            return


if __name__ == "__main__":
    _serve(sys.argv[1])
