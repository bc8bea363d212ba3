"""What passes without consent: the allow-lists the dialect classifiers consult.

Kept apart from the detectors so a reviewer sees every trusted name in one place; anything
not listed here needs consent (the classifier fails closed).
"""

from __future__ import annotations

# Settings a migration may change for its own session without consent: the timeouts (which
# only make it give up sooner), messages and memory. Anything else can change what later
# statements mean or where they write (search_path, timezone, session_replication_role, ...).
SAFE_SETTINGS = frozenset(
    {
        "lock_timeout",
        "statement_timeout",
        "idle_in_transaction_session_timeout",
        "application_name",
        "client_min_messages",
        "check_function_bodies",
        "maintenance_work_mem",
        "work_mem",
    }
)
# The guards a run sets for its session: 0 means "no limit", which switches the guard off.
TIMEOUT_SETTINGS = frozenset(
    {"lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"}
)
# Functions known not to write: reading, formatting, generating values.
SAFE_FUNCTIONS = frozenset(
    {
        "now",
        "coalesce",
        "lower",
        "upper",
        "length",
        "trim",
        "btrim",
        "ltrim",
        "rtrim",
        "concat",
        "concat_ws",
        "substring",
        "substr",
        "replace",
        "left",
        "right",
        "to_char",
        "to_date",
        "to_timestamp",
        "date_trunc",
        "extract",
        "count",
        "max",
        "min",
        "sum",
        "avg",
        "abs",
        "round",
        "floor",
        "ceil",
        "greatest",
        "least",
        "nullif",
        "gen_random_uuid",
        "uuid_generate_v4",
        "md5",
        "json_build_object",
        "jsonb_build_object",
        "to_json",
        "to_jsonb",
        "array_agg",
        "string_agg",
        "timezone",
        "current_setting",
        "random",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "nextval",
        "currval",
        "row_number",
        "generate_series",
        "unnest",
        "jsonb_array_elements",
        "json_array_elements",
        "array_length",
        "cardinality",
        "format",
        "quote_ident",
        "quote_literal",
        "split_part",
        "regexp_replace",
        "position",
        "char_length",
        "octet_length",
        "make_interval",
        "age",
        "date_part",
        "bool_or",
        "bool_and",
    }
)
# PostgreSQL's catalog readers, trusted only qualified with pg_catalog (SQLAlchemy's reflection
# and Alembic's version-table check call them so).
CATALOG_FUNCTIONS = frozenset(
    {
        "pg_table_is_visible",
        "pg_type_is_visible",
        "pg_function_is_visible",
        "format_type",
        "pg_get_expr",
        "pg_get_constraintdef",
        "pg_get_indexdef",
        "pg_get_viewdef",
        "pg_get_serial_sequence",
        "pg_get_triggerdef",
        "pg_get_statisticsobjdef_columns",
        "obj_description",
        "col_description",
        "current_schema",
        "current_schemas",
        "current_database",
        "version",
        "generate_subscripts",
        "array_position",
        "pg_encoding_to_char",
        "to_regclass",
        "array_agg",
        "array_length",
        "unnest",
    }
)
# Defaults that make ADD COLUMN rewrite (or fill row by row) an existing table.
VOLATILE_DEFAULTS = frozenset(
    {"random", "clock_timestamp", "gen_random_uuid", "uuid_generate_v4", "nextval", "timeofday"}
)


SAFE_PRAGMAS = frozenset({"foreign_keys", "legacy_alter_table", "defer_foreign_keys"})
# SQLite's schema queries: whatever their argument, they only read (SQLAlchemy reflects with them).
READING_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "table_list",
        "database_list",
        "collation_list",
    }
)
SWITCHED_ON = frozenset({"on", "1", "true", "yes"})  # PRAGMA foreign_keys passes only switched on
# Session settings a MariaDB/MySQL migration may change without consent: timeouts (only with a
# non-zero literal) and the connection's character set. FOREIGN_KEY_CHECKS=0 lets later writes
# leave orphans, sql_mode can make them truncate values silently: not on the list.
SAFE_MYSQL_SETTINGS = frozenset(
    {
        "lock_wait_timeout",
        "innodb_lock_wait_timeout",
        "max_statement_time",
        "names",
        "character set",
    }
)
MYSQL_TIMEOUTS = frozenset({"lock_wait_timeout", "innodb_lock_wait_timeout", "max_statement_time"})
# ALTER TABLE options (MariaDB's online DDL clauses) that keep the table open to writers.
SAFE_ALTER_OPTIONS = {
    "ALGORITHMPROPERTY": frozenset({"DEFAULT", "INSTANT", "INPLACE", "NOCOPY"}),
    "LOCKPROPERTY": frozenset({"DEFAULT", "NONE"}),
}
