"""Precision on real histories (issue 17): what a revision itself created is not somebody's
data. A default on a new table runs later, per row; an UPDATE that fills a column the revision
added (or a table it created) is a backfill."""

from __future__ import annotations

import pytest

from tasks.lint.classifier import classify

DIALECTS = ["postgresql", "sqlite", "mysql"]


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("sqlite", "CREATE TABLE t (id BLOB DEFAULT (randomblob(16)) NOT NULL, PRIMARY KEY (id))"),
        ("sqlite", "CREATE TABLE t (id INTEGER, v TEXT DEFAULT (lower(hex(randomblob(16)))))"),
        ("mysql", "CREATE TABLE t (id INT, v VARCHAR(36) DEFAULT (uuid()))"),
    ],
)
def test_a_default_on_a_new_table_is_not_a_finding(dialect, sql):
    assert classify(sql, dialect) == []


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("sqlite", "CREATE TABLE t AS SELECT evil(1) AS x"),
        ("sqlite", "ALTER TABLE t ADD COLUMN v BLOB DEFAULT (evil(16))"),
    ],
)
def test_a_call_that_runs_now_still_needs_consent(dialect, sql):
    assert [finding.rule for finding in classify(sql, dialect)] == ["function-call"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_update_of_a_column_added_in_the_revision_is_a_backfill(dialect):
    sql = (
        "ALTER TABLE users ADD COLUMN score INTEGER; UPDATE users SET score = 1; "
        "UPDATE users SET name = 'x'"
    )
    findings = classify(sql, dialect)
    assert [(finding.rule, finding.statement) for finding in findings] == [
        ("update-rows", "UPDATE users SET name = 'x'")
    ]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_update_of_a_table_created_in_the_revision_is_a_backfill(dialect):
    sql = "CREATE TABLE n (id INT, v INT); INSERT INTO n VALUES (1, 2); UPDATE n SET v = 3"
    assert classify(sql, dialect) == []


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_column_is_new_only_in_its_own_revision(dialect):
    from tasks.lint.classifier import Catalog

    catalog = Catalog()
    assert classify("ALTER TABLE users ADD COLUMN score INTEGER", dialect, catalog=catalog) == []
    later = classify("UPDATE users SET score = 2", dialect, catalog=catalog)
    assert [finding.rule for finding in later] == ["update-rows"]
