"""Alembic's commands for one environment, the revision writer and the lock-safe forms."""
