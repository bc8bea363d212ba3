"""The consent classifier (tasks.lint.classifier.classify) on real parsers: a table of destructive
forms per
dialect that must each need consent (comments before and inside, mixed case, several statements
in one string, statements hidden in larger constructs), next to a table of safe forms that must
pass. A form missing from the allow-list is refused, so each safe form here is one the
classifier understood, not one it failed to recognise."""

from __future__ import annotations

import pytest

from tasks.lint.classifier import (
    NEEDS_CONSENT,
    RUNS_ONLINE,
    Catalog,
    classify,
    runs_differently_online,
    scan_source,
    statements,
)

# Forms every dialect's parser reads the same way.
COMMON_DESTRUCTIVE = [
    "DROP TABLE memberships",
    "/* c */ DROP TABLE memberships",
    "-- a comment\nDROP TABLE memberships",
    "drop table memberships",
    "DrOp TaBlE memberships",
    "DROP /* inside */ TABLE memberships",
    "DROP TABLE IF EXISTS memberships",
    "UPDATE users SET role='member'; DROP TABLE memberships",
    "INSERT INTO users (id) VALUES (1); drop table memberships",
    "SELECT 1; DROP TABLE memberships; SELECT 2",
    "ALTER TABLE users DROP COLUMN legacy",
    "alter table users drop column legacy",
    "ALTER TABLE users /* x */ DROP /* y */ COLUMN legacy",
    "DROP INDEX ix_users_name",
    "DROP VIEW active_users",
    "DELETE FROM users",
    "DELETE FROM users WHERE id > 10",
    "delete from users where role = 'guest'",
    "UPDATE users SET role = 'member'",
    "UPDATE users SET role = 'member' WHERE id = 1",
    "UPDATE users SET role = 'member' WHERE role IS NULL OR id = 1",
    "UPDATE users SET role = 'member', name = 'x' WHERE role IS NULL",
    "ALTER TABLE users RENAME TO people",
    "ALTER TABLE users RENAME COLUMN name TO full_name",
    "SELECT 1;\n\n-- later\nDELETE FROM users",
    "THIS IS NOT SQL",
    "DROP TABLE",
    "CREATE TABLE x (id INT); DROP TABLE x; DROP TABLE memberships",
    "INSERT INTO archive SELECT * FROM users; DELETE FROM users",
    "SELECT do_cleanup()",
    "SELECT count(*) FROM users WHERE cleanup(id)",
    "INSERT INTO users (id) SELECT wipe_everything()",
    "UPDATE users SET name = lower(name)",
    "DROP TABLE a, b",
]

PG_DESTRUCTIVE = [
    *COMMON_DESTRUCTIVE,
    "TRUNCATE memberships",
    "TRUNCATE TABLE memberships CASCADE",
    "truncate memberships, users",
    "DO $$ BEGIN EXECUTE 'DROP TABLE memberships'; END $$",
    "DO $$ BEGIN PERFORM 1; END $$",
    "do $body$ begin delete from users; end $body$ language plpgsql",
    "WITH gone AS (DELETE FROM users RETURNING id) SELECT count(*) FROM gone",
    "WITH changed AS (UPDATE users SET role = 'x' RETURNING id) SELECT 1 FROM changed",
    "WITH t AS (SELECT 1) DELETE FROM users",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    "SELECT setval('users_id_seq', 1)",
    "CALL purge_users()",
    "EXECUTE wipe_plan",
    "ALTER TABLE users ALTER COLUMN name TYPE varchar(20)",
    "ALTER TABLE users ALTER COLUMN id TYPE bigint",
    "ALTER TABLE users ALTER COLUMN name SET DATA TYPE text USING upper(name)",
    "ALTER TABLE users ALTER COLUMN name SET NOT NULL",
    "ALTER TABLE users ADD COLUMN x int, DROP COLUMN legacy",
    "ALTER TABLE users DROP CONSTRAINT fk_users_org",
    "ALTER TABLE IF EXISTS users DROP COLUMN IF EXISTS legacy CASCADE",
    "DROP TYPE user_role",
    "DROP SEQUENCE users_id_seq",
    "DROP SCHEMA app CASCADE",
    "DROP INDEX ix_users_name, ix_users_email",
    "CREATE INDEX ix_users_name ON users (name)",
    "CREATE UNIQUE INDEX ix_users_email ON users (email)",
    "ALTER TABLE users ADD COLUMN score int NOT NULL",
    "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid()",
    "ALTER TABLE users ADD COLUMN id2 serial",
    "ALTER TABLE users ADD CONSTRAINT fk_org FOREIGN KEY (org_id) REFERENCES orgs (id)",
    "ALTER TABLE users ADD CONSTRAINT uq_email UNIQUE (email)",
    "ALTER TABLE users ADD CONSTRAINT ck CHECK (age > 0)",
    "ALTER INDEX ix_users_name RENAME TO ix_people_name",
    "ALTER TYPE user_role RENAME VALUE 'admin' TO 'owner'",
    "ALTER SEQUENCE users_id_seq RESTART WITH 1",
    "CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
    "CREATE OR REPLACE VIEW v AS SELECT 1",
    "CREATE TRIGGER t BEFORE DELETE ON users FOR EACH ROW EXECUTE FUNCTION f()",
    "SET session_replication_role = replica",
    "INSERT INTO users (id, role) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET role = 'x'",
    "MERGE INTO users u USING staged s ON u.id = s.id WHEN MATCHED THEN DELETE",
    "VACUUM FULL users",
    "CLUSTER users USING users_pkey",
    "REINDEX TABLE users",
    "GRANT ALL ON users TO public",
    "REVOKE ALL ON users FROM app",
    "COPY users FROM '/tmp/users.csv'",
    "SELECT * INTO backup_users FROM users",
    "CREATE EXTENSION IF NOT EXISTS dblink",
    "ALTER TABLE users DISABLE TRIGGER ALL",
    "DROP TABLE memberships; -- the end",
    "SELECT 'it''s'; DROP TABLE memberships",
    "SELECT $$;$$; DROP TABLE memberships",
    "SELECT 'unterminated",
    "WITH d AS (DELETE FROM users RETURNING 1) INSERT INTO alembic_version VALUES ('x')",
    "UPDATE alembic_version SET version_num = wipe_users()",
    # NOT VALID then VALIDATE in one transaction: the ADD's lock is held during the scan.
    "ALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY (org_id) REFERENCES orgs (id) NOT VALID;\n"
    "ALTER TABLE users VALIDATE CONSTRAINT fk",
    "BEGIN; ALTER TABLE users ADD CONSTRAINT ck CHECK (a > 0) NOT VALID, VALIDATE CONSTRAINT ck",
    # Unknown functions where they run later, on every insert or read.
    "ALTER TABLE users ALTER COLUMN role SET DEFAULT wipe_users()",
    "CREATE TABLE t (id int DEFAULT wipe_users())",
    "ALTER TABLE users ADD CONSTRAINT ck CHECK (wipe_users(id)) NOT VALID",
    "CREATE VIEW v AS SELECT wipe_users()",
    "SELECT set_config('session_replication_role', 'replica', false)",
    # Session settings other than the timeout guards, resets, and timeouts switched off.
    "RESET ALL",
    "RESET lock_timeout",
    "SET statement_timeout TO DEFAULT",
    "SET statement_timeout TO 0",
    "SET lock_timeout = '0s'",
    "SET LOCAL lock_timeout = 0",
    "SET search_path TO nowhere",
    "SET TIME ZONE 'UTC'",
    "SET ROLE admin",
    "SET standard_conforming_strings = off",
    "SELECT set_config('search_path', 'nowhere', false)",
    "SELECT set_config('lock_timeout', '0', false)",
    "SELECT set_config(name, '5s', false) FROM settings",
    # Timeouts PostgreSQL stores as 0 (whole milliseconds): the guard is off.
    "SET lock_timeout = '0.4ms'",
    "SET statement_timeout = '100us'",
    "SET lock_timeout = 0.4",
    "SELECT set_config('lock_timeout', '0.9ms', false)",
    # Code defined in the database runs later, wherever it is called.
    "CREATE FUNCTION f() RETURNS int AS $$ DELETE FROM users RETURNING 1 $$ LANGUAGE sql",
    "CREATE FUNCTION lower(integer) RETURNS text AS $$ DELETE FROM users RETURNING 'x' $$ "
    "LANGUAGE sql",
    "CREATE PROCEDURE p() AS $$ DELETE FROM users $$ LANGUAGE sql",
    "CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()",
    "CREATE RULE r AS ON INSERT TO users DO ALSO DELETE FROM users",
    "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = f)",
    "CREATE CAST (int AS text) WITH FUNCTION f(int)",
    "CREATE AGGREGATE agg(int) (SFUNC = f, STYPE = int)",
    # Locks that stop writers until the revision commits; role memberships.
    "LOCK TABLE users IN ACCESS EXCLUSIVE MODE",
    "LOCK users",
    "LOCK TABLE users IN SHARE MODE",
    "GRANT pg_write_server_files TO app",
    "REVOKE admin FROM app",
    # Qualified with a schema other than pg_catalog: a user function, whatever its name.
    "SELECT public.lower(1)",
    # IF NOT EXISTS may do nothing: the table is neither new nor of the types it names.
    "CREATE TABLE IF NOT EXISTS users (id int, name varchar(5));\n"
    "ALTER TABLE users ALTER COLUMN name TYPE varchar(6)",
    "CREATE TABLE IF NOT EXISTS users (id int); CREATE INDEX ix_users_id ON users (id)",
]

MYSQL_DESTRUCTIVE = [
    *COMMON_DESTRUCTIVE,
    "TRUNCATE memberships",
    "TRUNCATE TABLE memberships",
    "ALTER TABLE users MODIFY name VARCHAR(20)",
    "ALTER TABLE users MODIFY name VARCHAR(255) NOT NULL",
    "ALTER TABLE users CHANGE name full_name VARCHAR(255)",
    "ALTER TABLE users CHANGE COLUMN name name VARCHAR(10)",
    "alter table users modify column name int",
    "ALTER TABLE users DROP INDEX ix_users_name",
    "ALTER TABLE users DROP FOREIGN KEY fk_users_org",
    "ALTER TABLE users DROP PRIMARY KEY",
    "ALTER TABLE users DROP CHECK ck_age",
    "ALTER TABLE users ADD COLUMN x INT, DROP COLUMN legacy",
    "ALTER TABLE users ADD CONSTRAINT fk_org FOREIGN KEY (org_id) REFERENCES orgs (id)",
    "DROP INDEX ix_users_name ON users",
    "RENAME TABLE users TO people",
    "REPLACE INTO users (id, name) VALUES (1, 'x')",
    "INSERT INTO users (id) VALUES (1) ON DUPLICATE KEY UPDATE name = 'x'",
    "/*!50000 DROP TABLE memberships */",
    "SELECT 1 /*! ; DROP TABLE memberships */",
    "/*!40101 SET @x = 1 */; SELECT 1",
    "CALL purge_users()",
    "LOAD DATA INFILE '/tmp/users.csv' INTO TABLE users",
    "HANDLER users OPEN",
    "CREATE TRIGGER t BEFORE DELETE ON users FOR EACH ROW SET @x = 1",
    "CREATE PROCEDURE p() BEGIN DELETE FROM users; END",
    "SET GLOBAL read_only = 1",
    "DROP DATABASE app",
    "SELECT SLEEP(10)",
    "SELECT GET_LOCK('x', 10)",
    "DELETE users FROM users JOIN orgs ON orgs.id = users.org_id",
    "UPDATE users JOIN orgs ON orgs.id = users.org_id SET users.role = 'x'",
    # MariaDB's multi-table UPDATE writes every table it joins, even when shaped as a backfill.
    "UPDATE users JOIN orgs ON orgs.id = users.org_id SET users.role = NULL "
    "WHERE users.role IS NULL",
    "UPDATE users, orgs SET users.role = NULL WHERE users.role IS NULL",
    "SET lock_wait_timeout = 0.4",
    "DESCRIBE DELETE FROM users",
    "CREATE OR REPLACE VIEW v AS SELECT 1",
    "GRANT ALL ON app.* TO 'x'@'%'",
    "OPTIMIZE TABLE users",
    "DROP TABLE memberships; -- the end",
    "SELECT 'it''s'; DROP TABLE memberships",
    "UPDATE alembic_version SET version_num = wipe_users()",
    # Table rebuilds (BLACKHOLE and MEMORY lose rows) and session settings off the allow-list.
    "ALTER TABLE memberships ENGINE=MEMORY",
    "ALTER TABLE memberships ENGINE=InnoDB",
    "ALTER TABLE users ADD COLUMN nick INT NULL, ALGORITHM=COPY",
    "ALTER TABLE users ADD COLUMN nick INT NULL, LOCK=EXCLUSIVE",
    "ALTER TABLE users ADD COLUMN nick INT NULL, ALGORITHM=INPLACE, LOCK=SHARED",
    "ALTER TABLE users ROW_FORMAT=COMPRESSED",
    "SET FOREIGN_KEY_CHECKS = 0",
    "SET foreign_key_checks = 0",
    "SET SESSION sql_mode = ''",
    "SET lock_wait_timeout = 5, sql_mode = ''",
    "SET GLOBAL lock_wait_timeout = 5",
    "SET @@global.lock_wait_timeout = 5",
    "SET @x = 1",
    "SET max_statement_time = 0",
    "CREATE TABLE IF NOT EXISTS users (id INT); ALTER TABLE users ADD CONSTRAINT fk "
    "FOREIGN KEY (id) REFERENCES orgs (id)",
]

SQLITE_DESTRUCTIVE = [
    *COMMON_DESTRUCTIVE,
    "DROP TRIGGER tr_users",
    "ALTER TABLE users DROP legacy",
    "INSERT OR REPLACE INTO users (id, name) VALUES (1, 'x')",
    "REPLACE INTO users (id, name) VALUES (1, 'x')",
    "PRAGMA writable_schema = ON",
    "PRAGMA journal_mode = OFF",
    "PRAGMA foreign_keys = OFF",
    "PRAGMA foreign_keys = 0",
    "VACUUM",
    "ATTACH DATABASE 'other.db' AS other",
    "DETACH DATABASE other",
    "CREATE TRIGGER t BEFORE DELETE ON users BEGIN SELECT 1; END",
    "CREATE TEMP TRIGGER t AFTER INSERT ON users BEGIN DELETE FROM users; END",
    "UPDATE OR REPLACE users SET id = 1",
    "INSERT INTO users (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET name = 'x'",
    "WITH t AS (SELECT 1) DELETE FROM users",
    "SELECT load_extension('evil.so')",
    "REINDEX users",
    "ANALYZE; DROP TABLE memberships",
    "CREATE TABLE _alembic_tmp_users (id INTEGER);\n"
    "INSERT INTO _alembic_tmp_users (id) SELECT id FROM users;\n"
    "DROP TABLE users;\nALTER TABLE _alembic_tmp_users RENAME TO users",
    "DROP TABLE memberships; -- the end",
    "SELECT 'it''s'; DROP TABLE memberships",
]

SAFE_COMMON = [
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name VARCHAR(50))",
    "create table accounts (id integer primary key, name varchar(50), email text)",
    "/* new table */ CREATE TABLE accounts (id INTEGER)",
    "ALTER TABLE users ADD COLUMN nickname TEXT",
    "ALTER TABLE users ADD COLUMN nickname VARCHAR(40) NULL",
    "INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'b')",
    "INSERT INTO archive (id) SELECT id FROM users WHERE id < 10",
    "UPDATE users SET role = 'member' WHERE role IS NULL",
    "UPDATE users SET role = 'member', name = 'x' WHERE role IS NULL AND name IS NULL",
    "SELECT 1",
    "SELECT count(*), max(id), coalesce(name, 'x') FROM users",
    "-- only a comment",
    "",
    "BEGIN; CREATE TABLE a (id INTEGER); COMMIT",
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
    "INSERT INTO alembic_version (version_num) VALUES ('abc')",
    "UPDATE alembic_version SET version_num='def' WHERE alembic_version.version_num = 'abc'",
    "DELETE FROM alembic_version WHERE alembic_version.version_num = 'def'",
    "CREATE TABLE orgs (id INTEGER); CREATE INDEX ix_orgs_id ON orgs (id)",
]

PG_SAFE = [
    *SAFE_COMMON,
    "CREATE INDEX CONCURRENTLY ix_users_name ON users (name)",
    "create unique index concurrently if not exists ix_users_email on users (email)",
    "DROP INDEX CONCURRENTLY IF EXISTS ix_users_name",
    "ALTER TABLE users ADD COLUMN level int DEFAULT 0",
    "ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT now()",
    "ALTER TABLE users ADD COLUMN active boolean NOT NULL DEFAULT true",
    "ALTER TABLE users ALTER COLUMN name DROP NOT NULL",
    "ALTER TABLE users ALTER COLUMN role SET DEFAULT 'member'",
    "ALTER TABLE users ALTER COLUMN role DROP DEFAULT",
    "ALTER TABLE users ADD CONSTRAINT fk_org FOREIGN KEY (org_id) REFERENCES orgs (id) NOT VALID",
    "ALTER TABLE users VALIDATE CONSTRAINT fk_org",
    "ALTER TABLE users ADD CONSTRAINT ck_age CHECK (age > 0) NOT VALID",
    "ALTER TABLE users ADD CONSTRAINT uq_email UNIQUE USING INDEX ix_users_email",
    # The NOT NULL pattern as an autocommit block renders it: each step its own transaction.
    "BEGIN;\nCOMMIT;\n"
    "ALTER TABLE users ADD CONSTRAINT ck_name CHECK (name IS NOT NULL) NOT VALID;\n"
    "ALTER TABLE users VALIDATE CONSTRAINT ck_name;\n"
    "BEGIN;\n"
    "ALTER TABLE users ALTER COLUMN name SET NOT NULL;\n"
    "ALTER TABLE users DROP CONSTRAINT ck_name;\n"
    "COMMIT",
    "ALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY (org_id) REFERENCES orgs (id) NOT VALID;\n"
    "COMMIT;\nBEGIN;\nALTER TABLE users VALIDATE CONSTRAINT fk",
    "CREATE TABLE t (id int, name varchar(10)); ALTER TABLE t ALTER COLUMN name TYPE varchar(20)",
    "CREATE TABLE t (id int); ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (id) REFERENCES u (id)",
    "CREATE TABLE t (id int); ALTER TABLE t ADD COLUMN n int NOT NULL",
    "COMMENT ON TABLE users IS 'people'",
    "COMMENT ON COLUMN users.name IS 'their name'",
    "CREATE SEQUENCE invoice_number_seq",
    "CREATE TYPE user_role AS ENUM ('member', 'admin')",
    "ALTER TYPE user_role ADD VALUE 'owner'",
    "SET lock_timeout = '4s'",
    "SET statement_timeout TO '30min'",
    "SET LOCAL statement_timeout = 60000",
    "SET idle_in_transaction_session_timeout = '1min'",
    "SET application_name = 'migration'",
    "SET client_min_messages = warning",
    "SELECT set_config('lock_timeout', '4s', false)",
    "SELECT set_config('statement_timeout', '30min', true)",
    "CREATE TABLE IF NOT EXISTS audit_log (id int)",
    "CREATE VIEW active_users AS SELECT * FROM users WHERE active",
    "CREATE SCHEMA reporting",
    "LOCK TABLE users IN ROW EXCLUSIVE MODE",
    "SET lock_timeout = '1ms'",
    "SET lock_timeout = '0.5s'",
    "SELECT pg_catalog.lower(name) FROM users",
    "ALTER SEQUENCE users_id_seq OWNED BY users.id",
    "CREATE TABLE copy AS SELECT id FROM users",
    "CREATE TABLE t (id uuid DEFAULT gen_random_uuid(), at timestamptz DEFAULT now())",
    "CREATE INDEX CONCURRENTLY ix_users_lower_name ON users (lower(name))",
]

MYSQL_SAFE = [
    *SAFE_COMMON,
    "CREATE INDEX ix_users_name ON users (name)",
    "CREATE UNIQUE INDEX ix_users_email ON users (email)",
    "ALTER TABLE users ADD COLUMN level INT NOT NULL DEFAULT 0",
    "ALTER TABLE users ALTER COLUMN role SET DEFAULT 'member'",
    "ALTER TABLE users ADD CONSTRAINT uq_email UNIQUE (email)",
    "CREATE TABLE t (id INT); ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (id) REFERENCES u (id)",
    "-- /*! looks executable */ but is a line comment\nSELECT 1",
    "SET lock_wait_timeout = 5",
    "SET max_statement_time = 0.5",
    "SET SESSION innodb_lock_wait_timeout = 10",
    "SET @@session.lock_wait_timeout = 5",
    "SET max_statement_time = 30",
    "SET NAMES utf8mb4",
    "ALTER TABLE users ADD COLUMN nick INT NULL, ALGORITHM=INSTANT",
    "ALTER TABLE users ADD COLUMN nick INT NULL, ALGORITHM=INPLACE, LOCK=NONE",
    "ALTER TABLE users COMMENT 'people'",
    "CREATE TABLE IF NOT EXISTS audit_log (id INT)",
]

SQLITE_SAFE = [
    *SAFE_COMMON,
    "CREATE INDEX ix_users_name ON users (name)",
    "CREATE UNIQUE INDEX IF NOT EXISTS ix_users_email ON users (email)",
    "PRAGMA foreign_keys = ON",
    "PRAGMA foreign_keys",
    "CREATE VIEW active_users AS SELECT * FROM users",
    "/*!50000 DROP TABLE memberships */ SELECT 1",  # only MySQL runs /*! comments
]


def needing_consent(sql: str, dialect: str, catalog: Catalog | None = None) -> list:
    return [f for f in classify(sql, dialect, catalog=catalog) if f.severity in NEEDS_CONSENT]


def test_the_tables_are_large_enough():
    for table in (PG_DESTRUCTIVE, MYSQL_DESTRUCTIVE, SQLITE_DESTRUCTIVE):
        assert len(set(table)) == len(table) >= 40


@pytest.mark.parametrize("sql", PG_DESTRUCTIVE)
def test_postgresql_destructive_forms_need_consent(sql):
    found = needing_consent(sql, "postgresql")
    assert found, sql
    assert all(f.message and f.subject for f in found)  # each says why


@pytest.mark.parametrize("sql", MYSQL_DESTRUCTIVE)
def test_mysql_destructive_forms_need_consent(sql):
    found = needing_consent(sql, "mysql")
    assert found, sql
    assert all(f.message and f.subject for f in found)


@pytest.mark.parametrize("sql", SQLITE_DESTRUCTIVE)
def test_sqlite_destructive_forms_need_consent(sql):
    found = needing_consent(sql, "sqlite")
    assert found, sql
    assert all(f.message and f.subject for f in found)


@pytest.mark.parametrize("sql", PG_SAFE)
def test_postgresql_safe_forms_pass(sql):
    assert needing_consent(sql, "postgresql") == []


@pytest.mark.parametrize("sql", MYSQL_SAFE)
def test_mysql_safe_forms_pass(sql):
    assert needing_consent(sql, "mysql") == []


@pytest.mark.parametrize("sql", SQLITE_SAFE)
def test_sqlite_safe_forms_pass(sql):
    assert needing_consent(sql, "sqlite") == []


@pytest.mark.parametrize(
    ("sql", "rule", "subject"),
    [
        ("/* c */ DROP TABLE memberships", "drop-table", "drop table memberships"),
        ("ALTER TABLE users DROP COLUMN legacy", "drop-column", "drop column users.legacy"),
        (
            "ALTER TABLE users ALTER COLUMN name SET NOT NULL",
            "set-not-null",
            "set not null users.name",
        ),
        ("TRUNCATE memberships", "truncate", "truncate memberships"),
        ("THIS IS NOT SQL", "unparsable", "unparsable SQL"),
        ("DO $$ BEGIN NULL; END $$", "procedural-block", "DO block"),
        ("SELECT do_cleanup()", "function-call", "call do_cleanup()"),
    ],
)
def test_one_finding_each_with_its_reason(sql, rule, subject):
    (finding,) = classify(sql, "postgresql")
    assert (finding.rule, finding.subject) == (rule, subject)


def test_each_statement_of_a_string_is_judged_on_its_own():
    findings = classify("UPDATE users SET role='member'; DROP TABLE memberships", "postgresql")
    assert [(f.rule, f.statement) for f in findings] == [
        ("update-rows", "UPDATE users SET role='member'"),
        ("drop-table", "DROP TABLE memberships"),
    ]


def test_a_statement_the_parser_rejects_does_not_hide_the_others():
    findings = classify("SELECT 1; FOO BAR baz; DROP TABLE m", "postgresql")
    assert [f.rule for f in findings] == ["unparsable", "drop-table"]


@pytest.mark.parametrize(
    ("current", "new", "safe"),
    [
        ("varchar(255)", "varchar(512)", True),
        ("varchar(255)", "text", True),
        ("varchar(255)", "varchar(255)", True),
        ("varchar(255)", "varchar(100)", False),
        ("integer", "bigint", False),
        (None, "varchar(512)", False),  # unknown current type: never safe
    ],
)
def test_widening_a_varchar_is_safe_only_when_known(current, new, safe):
    catalog = Catalog(lookup=lambda table, column: current)
    sql = f"ALTER TABLE users ALTER COLUMN name TYPE {new}"
    assert (needing_consent(sql, "postgresql", catalog) == []) is safe


def test_set_not_null_needs_the_validated_check_first():
    catalog = Catalog()
    unvalidated = (
        "ALTER TABLE users ADD CONSTRAINT ck CHECK (name IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE users ALTER COLUMN name SET NOT NULL"
    )
    assert [f.rule for f in needing_consent(unvalidated, "postgresql", catalog)] == ["set-not-null"]
    other_column = (
        "ALTER TABLE users ADD CONSTRAINT ck CHECK (email IS NOT NULL) NOT VALID;\nCOMMIT;\n"
        "ALTER TABLE users VALIDATE CONSTRAINT ck;\n"
        "ALTER TABLE users ALTER COLUMN name SET NOT NULL"
    )
    assert [f.rule for f in needing_consent(other_column, "postgresql")] == ["set-not-null"]


def test_a_leftover_not_null_check_may_be_dropped_only_to_be_added_again():
    """The safe NOT NULL revision first clears a leftover of its own check (a failed run)."""
    pattern = (
        "ALTER TABLE users DROP CONSTRAINT IF EXISTS ck_users_name_not_null;\n"
        "ALTER TABLE users ADD CONSTRAINT ck_users_name_not_null CHECK (name IS NOT NULL) "
        "NOT VALID;\nCOMMIT;\n"
        "ALTER TABLE users VALIDATE CONSTRAINT ck_users_name_not_null;\n"
        "ALTER TABLE users ALTER COLUMN name SET NOT NULL;\n"
        "ALTER TABLE users DROP CONSTRAINT ck_users_name_not_null"
    )
    assert needing_consent(pattern, "postgresql") == []
    not_added_again = "ALTER TABLE users DROP CONSTRAINT IF EXISTS ck_users_name_not_null"
    assert [f.rule for f in needing_consent(not_added_again, "postgresql")] == ["drop-constraint"]
    other_table = pattern.replace("DROP CONSTRAINT IF EXISTS", "DROP CONSTRAINT IF EXISTS", 1)
    other_table = other_table.replace(
        "ALTER TABLE users DROP CONSTRAINT IF EXISTS",
        "ALTER TABLE projects DROP CONSTRAINT IF EXISTS",
    )
    assert [f.rule for f in needing_consent(other_table, "postgresql")] == ["drop-constraint"]
    without_if_exists = pattern.replace(" IF EXISTS", "", 1)
    assert [f.rule for f in needing_consent(without_if_exists, "postgresql")] == ["drop-constraint"]


def test_a_table_is_new_only_in_the_revision_that_creates_it():
    catalog = Catalog()
    assert needing_consent("CREATE TABLE t (id int)", "postgresql", catalog) == []
    later = needing_consent("CREATE INDEX ix ON t (id)", "postgresql", catalog)
    assert [f.rule for f in later] == ["require-concurrent-index-creation"]


SOURCE = """
def upgrade():
    op.add_column("users", sa.Column("nickname", sa.Text))
    {body}


def downgrade():
    op.drop_column("users", "nickname")
"""


@pytest.mark.parametrize(
    ("body", "rules"),
    [
        ('op.drop_column("users", "legacy")', ["drop-column"]),
        ('op.execute("/* c */ DROP TABLE memberships")', ["drop-table"]),
        (
            'op.execute(sa.text("UPDATE users SET role=1; DROP TABLE m"))',
            ["update-rows", "drop-table"],
        ),
        ("op.execute(sql)", ["dynamic-sql"]),
        ('op.execute(f"DROP TABLE {name}")', ["dynamic-sql"]),
        ('op.alter_column("users", "name", nullable=False)', ["set-not-null"]),
        ('op.alter_column("users", "name", type_=sa.String(5))', ["change-column-type"]),
        ('op.rename_table("users", "people")', ["rename"]),
        ('op.some_new_operation("users")', ["unknown-statement"]),
        ('getattr(op, "drop_table")("users")', ["unknown-statement"]),
        (
            'with op.batch_alter_table("users") as batch_op:\n        batch_op.drop_column("x")',
            ["drop-column"],
        ),
    ],
)
def test_source_scanning_fails_closed(body, rules):
    found = scan_source(SOURCE.format(body=body), upgrade=True)
    assert [f.rule for f in found] == rules
    assert all(f.severity == "destructive" and f.source == "source" for f in found)


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ('op.create_index("ix", "users", ["name"])', "require-concurrent-index-creation"),
        (
            'op.create_foreign_key("fk", "users", "orgs", ["org_id"], ["id"])',
            "adding-foreign-key-constraint",
        ),
        ('op.create_check_constraint("ck", "users", "id > 0")', "constraint-missing-not-valid"),
        ('op.create_unique_constraint("uq", "users", ["email"])', "disallowed-unique-constraint"),
        (
            'op.add_column("users", sa.Column("n", sa.Integer, nullable=False))',
            "adding-required-field",
        ),
    ],
)
def test_source_scanning_knows_postgresql_lock_hazards(body, rule):
    (finding,) = scan_source(SOURCE.format(body=body), upgrade=True, dialect="postgresql")
    assert (finding.rule, finding.severity) == (rule, "blocking")
    assert scan_source(SOURCE.format(body=body), upgrade=True, dialect="sqlite") == []


def test_source_scanning_follows_op_calls_into_helpers():
    source = SOURCE.format(body="_cleanup()") + '\n\ndef _cleanup():\n    op.drop_table("m")\n'
    assert [f.rule for f in scan_source(source, upgrade=True)] == ["drop-table"]


@pytest.mark.parametrize(
    "body",
    [
        'op.create_index("ix", "users", ["name"], postgresql_concurrently=True)',
        'op.create_table("t", sa.Column("id", sa.Integer))\n    op.create_index("ix", "t", ["id"])',
        'op.create_foreign_key("fk", "users", "orgs", ["org_id"], ["id"], '
        "postgresql_not_valid=True)",
        'op.add_column("users", sa.Column("n", sa.Integer, nullable=False, server_default="0"))',
        'op.execute("UPDATE users SET role = 1 WHERE role IS NULL")',
        'op.alter_column("users", "name", nullable=True, existing_type=sa.Text)',
        "pass",
    ],
)
def test_source_scanning_passes_known_safe_operations(body):
    assert scan_source(SOURCE.format(body=body), upgrade=True) == []


def test_source_scanning_reads_the_right_function():
    assert [f.rule for f in scan_source(SOURCE.format(body="pass"), upgrade=False)] == [
        "drop-column"
    ]


@pytest.mark.parametrize(
    ("body", "rules"),
    [
        ('op.get_bind().execute(sa.text("DROP TABLE memberships"))', ["drop-table"]),
        ('op.get_bind().execute(sa.text("SELECT count(*) FROM users"))', []),
        (
            'conn = op.get_bind()\n    conn.execute(sa.text("SELECT 1"))',
            ["connection-use", "connection-use"],  # each line says what it could not read
        ),
        ('op.get_context().connection.exec_driver_sql("DROP TABLE m")', ["drop-table"]),
        ('op.get_context().bind.execute(sa.text("DELETE FROM users"))', ["delete-rows"]),
        ('op.get_context().execute("DROP TABLE m")', ["drop-table"]),
        ('context.get_bind().exec_driver_sql("TRUNCATE users")', ["truncate"]),
        ("op.get_context().connection.exec_driver_sql(sql)", ["dynamic-sql"]),
        (
            "c = op.get_context().connection\n    c.exec_driver_sql('SELECT 1')",
            ["connection-use", "connection-use"],
        ),
        ('sa.create_engine(url).connect().execute(sa.text("DROP TABLE m"))', ["connection-use"]),
        ('op.get_context().connection.exec_driver_sql("SELECT 1")', []),
        ('if op.get_bind().dialect.name == "postgresql":\n        op.execute("SELECT 1")', []),
        ('with op.get_context().autocommit_block():\n        op.execute("SELECT 1")', []),
    ],
)
def test_source_scanning_judges_sql_run_through_the_connection(body, rules):
    found = scan_source(SOURCE.format(body=body), upgrade=True)
    assert [f.rule for f in found] == rules


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ("from alembic.op import drop_table as dt\n    dt('m')", "unknown-statement"),
        ("from alembic.op import *\n    drop_table('m')", "unknown-statement"),
        ("from alembic import op as o\n    o.drop_table('m')", "unknown-statement"),
        ("from alembic.operations import Operations", "unknown-statement"),
        ("import alembic\n    alembic.op.drop_table('m')", "unknown-statement"),
        ("import alembic.op as o2\n    o2.drop_table('m')", "unknown-statement"),
        ("exec(\"op.drop_table('m')\")", "dynamic-code"),
        ("eval(\"op.drop_table('m')\")", "dynamic-code"),
        ("code = compile('x', 'f', 'exec')", "dynamic-code"),
        ("__import__('alembic').op.drop_table('m')", "dynamic-code"),
        ("import importlib\n    importlib.import_module('alembic.op')", "dynamic-code"),
        ("from importlib import import_module\n    import_module('alembic.op')", "dynamic-code"),
        ("globals()['op'].drop_table('m')", "dynamic-code"),
        ('getattr(sa, "x")', "unknown-statement"),
        ("import subprocess\n    subprocess.run(['psql', '-c', 'DROP TABLE m'])", "dynamic-code"),
        ('op.get_context().impl._exec("DROP TABLE m")', "unknown-statement"),
        ('ctx = op.get_context()\n    ctx.impl._exec("DROP TABLE m")', "unknown-statement"),
        ('op.migration_context.connection.exec_driver_sql("DROP TABLE m")', "unknown-statement"),
        ('context.config.attributes["connection"].exec_driver_sql("x")', "connection-use"),
        ('op.get_bind().scalar(sa.text("DELETE FROM users RETURNING 1"))', "connection-use"),
        ('with op.batch_alter_table("users") as b:\n        b.drop_column("x")', "drop-column"),
    ],
)
def test_source_scanning_needs_consent_for_what_it_cannot_resolve(body, rule):
    found = scan_source(SOURCE.format(body=body), upgrade=True)
    assert rule in [f.rule for f in found], found
    assert all(f.severity == "destructive" and f.message for f in found)


@pytest.mark.parametrize(
    "body",
    [
        "from alembic import context\n    if context.is_offline_mode():\n        return",
        "if op.get_context().as_sql:\n        return",
        'op.get_bind().execute(sa.text("SELECT 1"))',
        'op.get_context().connection.exec_driver_sql("SELECT 1")',
        "conn = op.get_bind()",
        'context.config.attributes["connection"].execute(sa.text("SELECT 1"))',
        'session.execute(sa.text("DELETE FROM users"))',
        'sa.create_engine("sqlite://").connect()',
    ],
)
def test_a_revision_that_asks_for_offline_mode_or_uses_the_connection_runs_differently(body):
    assert runs_differently_online(SOURCE.format(body=body), upgrade=True)


@pytest.mark.parametrize(
    "body",
    [
        "pass",
        'if op.get_bind().dialect.name == "postgresql":\n        op.execute("SELECT 1")',
        'with op.get_context().autocommit_block():\n        op.execute("SELECT 1")',
    ],
)
def test_a_revision_without_online_branches_renders_what_it_runs(body):
    assert not runs_differently_online(SOURCE.format(body=body), upgrade=True)


def test_online_findings_say_the_revision_runs_differently():
    body = "if not op.get_context().as_sql:\n        op.drop_table('m')"
    (finding,) = scan_source(SOURCE.format(body=body), upgrade=True, why=RUNS_ONLINE)
    assert finding.rule == "drop-table"
    assert finding.message.startswith("runs differently online than the SQL shown")


def test_a_do_block_says_what_plpgsql_parsed_in_it():
    sql = "DO $$ BEGIN EXECUTE 'DROP TABLE a'; IF true THEN DELETE FROM users; END IF; END $$"
    (finding,) = classify(sql, "postgresql")
    assert finding.rule == "procedural-block"
    assert finding.message == (
        "runs a procedural block (DO) whose effect cannot be known statically; "
        "it runs dynamic SQL (EXECUTE), delete rows of users"
    )


# --- names are schema-qualified --------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE audit.users (id int); CREATE INDEX ix_users_name ON users (name)",
        "CREATE TABLE audit.users (id int); ALTER TABLE users ADD COLUMN n int NOT NULL",
        "CREATE TABLE users (id int); ALTER TABLE live.users ADD CONSTRAINT fk FOREIGN KEY (id) "
        "REFERENCES u (id)",
        "CREATE TABLE audit.users (name varchar(200)); "
        "ALTER TABLE users ALTER COLUMN name TYPE varchar(300)",
    ],
)
def test_a_table_created_in_another_schema_does_not_make_the_existing_one_new(sql):
    assert needing_consent(sql, "postgresql")


def test_a_table_created_in_the_same_schema_is_new():
    sql = "CREATE TABLE audit.users (id int); CREATE INDEX ix ON audit.users (id)"
    assert needing_consent(sql, "postgresql") == []


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO other.alembic_version (version_num) VALUES ('x'); DELETE FROM users",
        "DROP TABLE other.alembic_version",
        "UPDATE other.alembic_version SET version_num = 'x'",
    ],
)
def test_only_the_configured_version_table_is_bookkeeping(sql):
    assert needing_consent(sql, "postgresql")
    assert needing_consent(sql, "sqlite")


def test_the_version_table_in_the_environments_schema_is_bookkeeping():
    from tasks.lint.classifier import statements

    sql = "INSERT INTO tenant_1.alembic_version (version_num) VALUES ('x')"
    assert statements(sql, "postgresql", "tenant_1") == []
    assert statements(sql, "postgresql") == [sql]


# --- functions are not trusted by name alone -------------------------------------------------


def test_an_overloaded_builtin_name_is_not_trusted_where_a_user_function_has_it():
    sql = "UPDATE users SET name = lower(id) WHERE name IS NULL"
    assert needing_consent(sql, "postgresql") == []
    shadowed = Catalog(shadowed=frozenset({"lower"}))
    assert [f.rule for f in classify(sql, "postgresql", catalog=shadowed)] == ["function-call"]
    qualified = "UPDATE users SET name = pg_catalog.lower(name) WHERE name IS NULL"
    assert classify(qualified, "postgresql", catalog=Catalog(shadowed=frozenset({"lower"}))) == []


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX CONCURRENTLY ix ON users (wipe_users(name))",
        "CREATE VIEW v AS SELECT public.lower(name) FROM users",
        "ALTER TABLE users ADD CONSTRAINT ck CHECK (app.lower(name) <> '') NOT VALID",
    ],
)
def test_unknown_or_user_functions_in_definitions_need_consent(sql):
    assert [f.rule for f in needing_consent(sql, "postgresql")] == ["function-call"]


def test_a_trailing_line_comment_does_not_swallow_the_next_statement():
    """Alembic's offline rendering writes `SELECT 1 -- c;`: the `;` is inside the comment, and
    the next op.execute's DELETE would read as a column alias of the SELECT."""
    rendered = "SELECT 1 -- tidy up;\n\nDELETE FROM people;\n\n"
    assert statements(rendered, "postgresql") == ["SELECT 1", "DELETE FROM people"]
    assert [f.rule for f in needing_consent(rendered, "postgresql")] == ["delete-rows"]
