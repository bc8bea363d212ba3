"""The guards around every operation: runner, migration lock, audit, ownership, stop signals."""
