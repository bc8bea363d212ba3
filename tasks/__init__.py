"""Database migration tasks for SQLAlchemy applications: the library under the Invoke tasks.

The packages are its layers, top to bottom: `cli`, `fleet`, `migrate`, `ci`, `guard`, `plan`,
`lint`, `schema`, `backup`, `core` (docs/architecture.md).
Nothing is imported here: `invoke --list` must stay fast.
"""
