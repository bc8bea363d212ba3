"""The backfill's time-based batch sizing (tasks/online/pacing.py), fed made-up durations: no
database and no clock."""

from __future__ import annotations

from tasks.online.pacing import MIN_BATCH_SIZE, BatchSizer


def test_a_slow_batch_shrinks_the_next_in_proportion() -> None:
    sizer = BatchSizer(1000, 0.1)
    sizer.took(0.5)  # five times the target: a fifth of the rows, a little under
    assert sizer.size == int(1000 * 0.1 / 0.5 * BatchSizer.MARGIN)


def test_quick_batches_grow_back_but_never_past_the_ceiling() -> None:
    sizer = BatchSizer(1000, 0.1)
    sizer.took(1.0)
    shrunk = sizer.size
    sizer.took(0.01)
    assert shrunk < sizer.size <= 1000
    for _ in range(100):
        sizer.took(0.01)
    assert sizer.size == 1000


def test_a_batch_near_the_target_keeps_its_size() -> None:
    sizer = BatchSizer(500, 0.1)
    sizer.took(0.07)
    assert sizer.size == 500


def test_the_floor_holds_and_a_lock_conflict_halves() -> None:
    sizer = BatchSizer(1000, 0.1)
    sizer.conflict()
    assert sizer.size == 500
    for _ in range(20):
        sizer.took(100.0)
        sizer.conflict()
    assert sizer.size == MIN_BATCH_SIZE
    assert BatchSizer(3, 0.1).floor == 3  # a ceiling under the floor is the floor


def test_without_a_target_the_size_is_fixed() -> None:
    sizer = BatchSizer(1000, None)
    sizer.took(100.0)
    sizer.conflict()
    assert sizer.size == 1000
