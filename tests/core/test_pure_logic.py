"""Unit tests for pure logic the CLI tests only reach end to end.

`tasks.migrate.graph.graph_rows` draws the lanes of `history --graph` from a revision map, and
`tasks.schema.sync.group` turns a comparison's changes into the items `local.sync` reports. Both are
pure: here they get Alembic's own `RevisionMap` over small revisions and hand-made `Change`
objects, no database and no script directory, so every lane, mark and pairing is pinned.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic.script.revision import Revision, RevisionMap
from sqlalchemy.dialects import postgresql

from tasks.migrate.graph import graph_rows
from tasks.schema.fast_diff import Change
from tasks.schema.sync import Item, group

# --- graph_rows ------------------------------------------------------------------------------


class _Revision(Revision):
    """A revision with the docstring a `Script` has; `RevisionMap` computes the rest."""

    def __init__(self, revision: str, down: str | tuple[str, ...] | None, doc: str) -> None:
        super().__init__(revision, down)
        self.doc = doc


class _Scripts:
    """The two methods of `ScriptDirectory` that `graph_rows` reads, over a `RevisionMap`."""

    def __init__(self, revisions: list[_Revision]) -> None:
        self.revision_map = RevisionMap(lambda: revisions)

    def walk_revisions(self) -> Iterator[Revision]:
        # What ScriptDirectory.walk_revisions does: heads first, each before its ancestors.
        return self.revision_map.iterate_revisions(
            "heads", "base", inclusive=True, assert_relative_length=False
        )

    def get_heads(self) -> list[str]:
        return list(self.revision_map.heads)


def _rows(revisions: list[_Revision], current: set[str]) -> list[str]:
    return [row.render() for row in graph_rows(_Scripts(revisions), current)]  # type: ignore[arg-type]


def test_a_straight_history_is_one_lane() -> None:
    revisions = [
        _Revision("aaa", None, "create users"),
        _Revision("bbb", "aaa", "add email"),
        _Revision("ccc", "bbb", "add index"),
    ]

    assert _rows(revisions, {"bbb"}) == [
        "*  ccc (head) add index",
        "*  bbb (current) add email",
        "*  aaa create users",
    ]


def test_a_branch_point_a_merge_and_a_second_head_get_their_lanes_and_marks() -> None:
    # aaa branches into bbb and ccc; mmm merges them; ddd is a second head on ccc.
    revisions = [
        _Revision("aaa", None, "root"),
        _Revision("bbb", "aaa", "left"),
        _Revision("ccc", "aaa", "right"),
        _Revision("mmm", ("bbb", "ccc"), "merge"),
        _Revision("ddd", "ccc", "other head"),
    ]

    assert _rows(revisions, {"bbb"}) == [
        "*  mmm (head, mergepoint) merge",
        "| \\",  # the merge opens a lane for its second parent
        "* |  bbb (current) left",
        "| | *  ddd (head) other head",
        "| | /",  # ddd's lane joins ccc's
        "| *  ccc (branchpoint) right",
        "| /",  # the branch point closes the lane it shares with bbb's line
        "*  aaa (branchpoint) root",
    ]


def test_two_databases_heads_are_both_current() -> None:
    revisions = [
        _Revision("aaa", None, "root"),
        _Revision("bbb", "aaa", "one"),
        _Revision("ccc", "aaa", "two"),
    ]

    rows = _rows(revisions, {"bbb", "ccc"})

    assert sum("(head, current)" in row for row in rows) == 2
    assert rows[-1] == "*  aaa (branchpoint) root"


# --- sync.group -------------------------------------------------------------------------------

METADATA = sa.MetaData()
USERS = sa.Table(
    "users",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(80)),
    sa.Column("team_id", sa.Integer, nullable=True),
)
ORDERS = sa.Table(
    "orders",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.ForeignKey("users.id")),
    sa.Column("total", sa.Numeric),
    sa.Index("ix_orders_user", "user_id"),
)
# (schema, table, columns, target schema, target, target columns, on update, on delete)
FK_BEFORE = (None, "users", ("team_id",), None, "teams", ("id",), None, None)
FK_AFTER = (None, "users", ("team_id",), None, "teams", ("id",), None, "CASCADE")


def _summary(items: list[Item]) -> list[tuple[Any, ...]]:
    return [(item.kind, item.table, item.name, [c.op for c in item.changes]) for item in items]


def test_a_new_table_is_one_item_with_its_indexes() -> None:
    (index,) = ORDERS.indexes
    changes = [
        Change("add_index", "orders", "ix_orders_user", model=index, signature=(False, "user_id")),
        Change("add_table", "orders", "orders", model=ORDERS),
    ]

    (item,) = group(changes, postgresql.dialect())

    assert (item.kind, item.table, item.name) == ("missing_table", "orders", "orders")
    assert item.detail == "table orders (3 columns, 1 index, 1 foreign key)"
    assert item.operation == "op.create_table('orders', ...)"
    assert [c.op for c in item.changes] == ["add_table", "add_index"]  # the table first


def test_a_dropped_and_added_index_on_the_same_columns_is_a_rename() -> None:
    changes = [
        Change("add_index", "users", "ix_users_mail", signature=(False, "email")),
        Change("remove_index", "users", "ix_users_email", signature=(False, "email")),
    ]

    (item,) = group(changes, postgresql.dialect())

    assert item.kind == "index_renamed"
    assert item.detail == "ix_users_email -> ix_users_mail on users(email)"
    assert item.operation == (
        "op.drop_index('ix_users_email', table_name='users'); "
        "op.create_index('ix_users_mail', 'users', ['email'], unique=False)"
    )
    assert not item.can_apply and item.reason == "sync never renames anything"


def test_the_same_name_wins_over_the_same_columns() -> None:
    """ix_a changed its columns to ix_b's old ones: a change of ix_a, not a rename of ix_b."""
    changes = [
        Change("remove_index", "users", "ix_a", signature=(False, "email")),
        Change("remove_index", "users", "ix_b", signature=(False, "team_id")),
        Change("add_index", "users", "ix_a", signature=(False, "team_id")),
    ]

    items = group(changes, postgresql.dialect())

    assert _summary(items) == [
        ("index_changed", "users", "ix_a", ["remove_index", "add_index"]),
        ("extra_index", "users", "ix_b", ["remove_index"]),
    ]
    assert items[0].detail == "index ix_a on users(email) -> index ix_a on users(team_id)"


def test_a_foreign_key_dropped_and_added_on_the_same_columns_changed_its_options() -> None:
    changes = [
        Change("remove_fk", "users", "fk_users_team", signature=FK_BEFORE),
        Change("add_fk", "users", "fk_users_team", signature=FK_AFTER),
    ]

    (item,) = group(changes, postgresql.dialect())

    assert item.kind == "foreign_key_changed"
    assert item.detail == (
        "foreign key fk_users_team (team_id) -> teams(id): "
        "options on update no action, on delete no action -> "
        "on update no action, on delete CASCADE"
    )
    assert [c.op for c in item.changes] == ["remove_fk", "add_fk"]
    assert item.reason == "sync never changes an existing constraint"


def test_foreign_keys_to_different_targets_stay_apart() -> None:
    elsewhere = (None, "users", ("team_id",), None, "groups", ("id",), None, None)
    changes = [
        Change("remove_fk", "users", "fk_users_team", signature=FK_BEFORE),
        Change("add_fk", "users", "fk_users_group", signature=elsewhere),
    ]

    assert [item.kind for item in group(changes, postgresql.dialect())] == [
        "extra_foreign_key",
        "missing_foreign_key",
    ]


def test_items_come_table_by_table_in_name_order() -> None:
    (index,) = ORDERS.indexes
    changes = [
        Change("add_column", "users", "team_id", model=USERS.c.team_id),
        Change("add_table", "orders", "orders", model=ORDERS),
        Change("add_index", "orders", "ix_orders_user", model=index, signature=(False, "user_id")),
    ]

    items = group(changes, postgresql.dialect())

    assert _summary(items) == [
        ("missing_table", "orders", "orders", ["add_table", "add_index"]),
        ("missing_column", "users", "team_id", ["add_column"]),
    ]
    assert items[1].detail == "column users.team_id INTEGER NULL"
