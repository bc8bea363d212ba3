"""Every rule a finding can name, in one registry: its id, its severity, and how to do it safely.

A finding's rule id is data people read (the plan, `ci.check`, `migrations.lint.ignore`) and
write (a revision's `consent = {"drop-column": "why"}`), so the ids are spelled once, here, as
`Rule` members (a `StrEnum`: each member *is* its id string, so findings, JSON and comparisons
with plain strings keep working). Adding a rule is one entry in `RULES` plus its detection;
`hit()` builds a verdict item with the severity the registry gives, so a detector never
repeats it.

Severities: `destructive` loses data, breaks code using the old shape, or cannot be known;
`blocking` takes locks or rewrites that stall traffic on a live table; `warning` is shown and
never needs consent. Squawk's own names for hazards we do not judge ourselves are registered
with `squawk=True` (their severity is what `merge` gives squawk's finding).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DESTRUCTIVE = "destructive"
BLOCKING = "blocking"
WARNING = "warning"
SEVERITIES = (DESTRUCTIVE, BLOCKING, WARNING)
# Findings a protected upgrade only applies with consent (--allow-destructive, typed, or written).
NEEDS_CONSENT = frozenset({DESTRUCTIVE, BLOCKING})
RANK = {WARNING: 0, BLOCKING: 1, DESTRUCTIVE: 2}


class Rule(StrEnum):
    # data and shape
    DROP_TABLE = "drop-table"
    DROP_COLUMN = "drop-column"
    DROP_INDEX = "drop-index"
    DROP_CONSTRAINT = "drop-constraint"
    DROP_TYPE = "drop-type"
    DROP_OBJECT = "drop-object"
    TABLE_REBUILD = "table-rebuild"
    UPDATE_ROWS = "update-rows"
    DELETE_ROWS = "delete-rows"
    TRUNCATE = "truncate"
    RENAME = "rename"
    CHANGE_COLUMN_TYPE = "change-column-type"
    SET_NOT_NULL = "set-not-null"
    CHANGE_ENGINE = "change-engine"
    ALTER_SEQUENCE = "alter-sequence"
    REPLACE_OBJECT = "replace-object"
    # code that runs in the database, or cannot be known
    DEFINE_ROUTINE = "define-routine"
    FUNCTION_CALL = "function-call"
    PROCEDURAL_BLOCK = "procedural-block"
    DYNAMIC_SQL = "dynamic-sql"
    DYNAMIC_CODE = "dynamic-code"
    CONNECTION_USE = "connection-use"
    EXECUTABLE_COMMENT = "executable-comment"
    UNKNOWN_STATEMENT = "unknown-statement"
    UNPARSABLE = "unparsable"
    # the session, the transaction, privileges
    UNKNOWN_SETTING = "unknown-setting"
    TIMEOUT_OFF = "timeout-off"
    TRANSACTION_CONTROL = "transaction-control"
    STRONG_LOCK = "strong-lock"
    GRANT_ROLE = "grant-role"
    # locks and rewrites (names shared with squawk where it has one)
    REQUIRE_CONCURRENT_INDEX_CREATION = "require-concurrent-index-creation"
    ADDING_SERIAL_PRIMARY_KEY_FIELD = "adding-serial-primary-key-field"
    ADDING_FIELD_WITH_DEFAULT = "adding-field-with-default"
    ADDING_REQUIRED_FIELD = "adding-required-field"
    DISALLOWED_UNIQUE_CONSTRAINT = "disallowed-unique-constraint"
    CONSTRAINT_MISSING_NOT_VALID = "constraint-missing-not-valid"
    ADDING_FOREIGN_KEY_CONSTRAINT = "adding-foreign-key-constraint"
    TABLE_COPY = "table-copy"
    # squawk's own names for lock hazards we do not judge ourselves
    ADDING_NOT_NULLABLE_FIELD = "adding-not-nullable-field"
    BAN_ALTER_DOMAIN_WITH_ADD_CONSTRAINT = "ban-alter-domain-with-add-constraint"
    BAN_CONCURRENT_INDEX_CREATION_IN_TRANSACTION = "ban-concurrent-index-creation-in-transaction"
    CHANGING_COLUMN_TYPE = "changing-column-type"
    RENAMING_COLUMN = "renaming-column"
    RENAMING_TABLE = "renaming-table"
    REQUIRE_CONCURRENT_INDEX_DELETION = "require-concurrent-index-deletion"
    # shown, never needing consent
    NOT_RENDERABLE = "not-renderable"
    NON_ATOMIC_DDL = "non-atomic-ddl"
    REHEARSAL_FAILED = "rehearsal-failed"
    SQUAWK_FAILED = "squawk-failed"


@dataclass(frozen=True)
class RuleSpec:
    severity: str
    help: str = ""  # how to do it safely
    squawk: bool = False  # squawk's name for a hazard only squawk judges

    @property
    def destructive(self) -> bool:
        return self.severity == DESTRUCTIVE

    @property
    def needs_consent(self) -> bool:
        return self.severity in NEEDS_CONSENT


_NOT_VALID = "Add it NOT VALID, then VALIDATE CONSTRAINT in a separate step."

RULES: dict[Rule, RuleSpec] = {
    Rule.DROP_TABLE: RuleSpec(
        DESTRUCTIVE, "Stop using the table in the code first; drop it in a later release."
    ),
    Rule.DROP_COLUMN: RuleSpec(
        DESTRUCTIVE, "Stop using the column in the code first; drop it in a later release."
    ),
    Rule.DROP_INDEX: RuleSpec(DESTRUCTIVE),
    Rule.DROP_CONSTRAINT: RuleSpec(DESTRUCTIVE),
    Rule.DROP_TYPE: RuleSpec(DESTRUCTIVE),
    Rule.DROP_OBJECT: RuleSpec(DESTRUCTIVE),
    Rule.TABLE_REBUILD: RuleSpec(DESTRUCTIVE),
    Rule.UPDATE_ROWS: RuleSpec(
        DESTRUCTIVE, "A backfill that only fills NULLs (WHERE col IS NULL) passes without consent."
    ),
    Rule.DELETE_ROWS: RuleSpec(DESTRUCTIVE),
    Rule.TRUNCATE: RuleSpec(DESTRUCTIVE),
    Rule.RENAME: RuleSpec(DESTRUCTIVE),
    Rule.CHANGE_COLUMN_TYPE: RuleSpec(DESTRUCTIVE),
    Rule.SET_NOT_NULL: RuleSpec(
        DESTRUCTIVE,
        "ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT, "
        "then SET NOT NULL (PostgreSQL 12+ skips the scan) and drop the check.",
    ),
    Rule.CHANGE_ENGINE: RuleSpec(DESTRUCTIVE),
    Rule.ALTER_SEQUENCE: RuleSpec(DESTRUCTIVE),
    Rule.REPLACE_OBJECT: RuleSpec(DESTRUCTIVE),
    Rule.DEFINE_ROUTINE: RuleSpec(
        DESTRUCTIVE,
        "Code defined in the database (functions, triggers, rules, operators, casts) runs later, "
        "wherever it is called: review it, then give consent in the revision.",
    ),
    Rule.FUNCTION_CALL: RuleSpec(DESTRUCTIVE),
    Rule.PROCEDURAL_BLOCK: RuleSpec(DESTRUCTIVE),
    Rule.DYNAMIC_SQL: RuleSpec(DESTRUCTIVE),
    Rule.DYNAMIC_CODE: RuleSpec(DESTRUCTIVE),
    Rule.CONNECTION_USE: RuleSpec(DESTRUCTIVE),
    Rule.EXECUTABLE_COMMENT: RuleSpec(DESTRUCTIVE),
    Rule.UNKNOWN_STATEMENT: RuleSpec(DESTRUCTIVE),
    Rule.UNPARSABLE: RuleSpec(DESTRUCTIVE),
    Rule.UNKNOWN_SETTING: RuleSpec(DESTRUCTIVE),
    Rule.TIMEOUT_OFF: RuleSpec(DESTRUCTIVE),
    Rule.TRANSACTION_CONTROL: RuleSpec(
        DESTRUCTIVE,
        "Alembic runs each revision in its own transaction; use "
        "op.get_context().autocommit_block() for statements that must run outside one.",
    ),
    Rule.STRONG_LOCK: RuleSpec(DESTRUCTIVE),
    Rule.GRANT_ROLE: RuleSpec(DESTRUCTIVE),
    Rule.REQUIRE_CONCURRENT_INDEX_CREATION: RuleSpec(
        BLOCKING,
        "CREATE INDEX CONCURRENTLY, outside a transaction (op.get_context().autocommit_block()).",
    ),
    Rule.ADDING_SERIAL_PRIMARY_KEY_FIELD: RuleSpec(BLOCKING),
    Rule.ADDING_FIELD_WITH_DEFAULT: RuleSpec(BLOCKING),
    Rule.ADDING_REQUIRED_FIELD: RuleSpec(BLOCKING),
    Rule.DISALLOWED_UNIQUE_CONSTRAINT: RuleSpec(
        BLOCKING,
        "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX.",
    ),
    Rule.CONSTRAINT_MISSING_NOT_VALID: RuleSpec(BLOCKING, _NOT_VALID),
    Rule.ADDING_FOREIGN_KEY_CONSTRAINT: RuleSpec(BLOCKING, _NOT_VALID),
    Rule.TABLE_COPY: RuleSpec(BLOCKING),
    Rule.ADDING_NOT_NULLABLE_FIELD: RuleSpec(BLOCKING, squawk=True),
    Rule.BAN_ALTER_DOMAIN_WITH_ADD_CONSTRAINT: RuleSpec(BLOCKING, squawk=True),
    Rule.BAN_CONCURRENT_INDEX_CREATION_IN_TRANSACTION: RuleSpec(BLOCKING, squawk=True),
    Rule.CHANGING_COLUMN_TYPE: RuleSpec(BLOCKING, squawk=True),
    Rule.RENAMING_COLUMN: RuleSpec(BLOCKING, squawk=True),
    Rule.RENAMING_TABLE: RuleSpec(BLOCKING, squawk=True),
    Rule.REQUIRE_CONCURRENT_INDEX_DELETION: RuleSpec(BLOCKING, squawk=True),
    Rule.NOT_RENDERABLE: RuleSpec(WARNING),
    Rule.NON_ATOMIC_DDL: RuleSpec(WARNING),
    Rule.REHEARSAL_FAILED: RuleSpec(WARNING),
    Rule.SQUAWK_FAILED: RuleSpec(WARNING),
}

# A verdict item: (rule, severity, message, subject); an empty verdict means known safe.
Hit = tuple[str, str, str, str]


def hit(rule: Rule, message: str, subject: str) -> Hit:
    """One verdict item, with the severity the registry gives `rule`."""
    return (rule, RULES[rule].severity, message, subject)


def severity(rule: str, default: str = WARNING) -> str:
    """The registered severity of `rule` (squawk's unregistered rules are warnings)."""
    spec = RULES.get(rule)  # type: ignore[call-overload]
    return spec.severity if spec is not None else default


def help_for(rule: str) -> str:
    spec = RULES.get(rule)  # type: ignore[call-overload]
    return spec.help if spec is not None else ""


def is_known(rule: str) -> bool:
    return rule in RULES
