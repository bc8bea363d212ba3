"""The root collection: one sub-collection per environment, configuration defaults attached."""

from __future__ import annotations

from invoke import Collection

from tasks.core.settings import COLLECTIONS, DEFAULTS

# Collections that may write revision files. Staging and production only run what exists.
REVISION_COLLECTIONS = frozenset({"local", "dev"})


def build_namespace() -> Collection:
    from tasks.cli.alembic_tasks import alembic_tasks
    from tasks.cli.ci_tasks import ci_tasks
    from tasks.cli.fleet_tasks import fleet_tasks
    from tasks.cli.local_tasks import local_tasks
    from tasks.core.console import quiet_broken_pipes

    quiet_broken_pipes()  # `invoke --list | head`: Invoke's own output, outside any task

    root = Collection()
    root.configure({"migrations": DEFAULTS})
    for collection in COLLECTIONS:
        sub = Collection(collection)
        for task in alembic_tasks(collection, with_revision=collection in REVISION_COLLECTIONS):
            sub.add_task(task)
        if collection == "local":
            for task in local_tasks():
                sub.add_task(task)
        root.add_collection(sub)
    root.add_collection(Collection("ci", *ci_tasks()))
    root.add_collection(Collection("fleet", *fleet_tasks()))
    return root
