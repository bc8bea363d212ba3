"""Commands the tasks suggest in their messages, only ever ones that exist.

An error that suggests a stamp task fleets do not have sends an operator, in the middle of an
incident, to a command that fails. Every suggestion built from a run's collection goes through
`command`, which checks it against the tasks each collection really has (`TASKS`, held equal to
Invoke's namespace by tests/cli/test_suggested_commands.py, which also checks every literal
`invoke <collection>.<task>` in the code and the README).
"""

from __future__ import annotations

_ENVIRONMENT = frozenset(
    {
        "audit",
        "branches",
        "check",
        "current",
        "downgrade",
        "heads",
        "history",
        "plan",
        "preflight",
        "repair",
        "show",
        "stamp",
        "upgrade",
    }
)
_WRITES_REVISIONS = frozenset({"edit", "merge", "revision", "checksums", "squash"})

TASKS: dict[str, frozenset[str]] = {
    "local": _ENVIRONMENT | _WRITES_REVISIONS | {"sync", "backup", "restore", "reset"},
    "dev": _ENVIRONMENT | _WRITES_REVISIONS,
    "staging": _ENVIRONMENT,
    "prod": _ENVIRONMENT,
    "fleet": frozenset({"status", "plan", "upgrade", "downgrade", "check"}),
    "ci": frozenset({"check"}),
}


def exists(name: str) -> bool:
    """Whether `collection.task` is a task (`dev.stamp` yes, `fleet.stamp` no)."""
    collection, _, task = name.partition(".")
    return task in TASKS.get(collection, frozenset())


def collection_of(task_name: str) -> str:
    """`dev` for `dev.upgrade`; the collection a run's task belongs to."""
    return task_name.rpartition(".")[0] or task_name


def command(collection: str, task: str, arguments: str = "") -> str | None:
    """`invoke <collection>.<task> <arguments>`, or None when that task does not exist."""
    name = f"{collection}.{task}"
    if not exists(name):
        return None
    return f"invoke {name} {arguments}".rstrip()
