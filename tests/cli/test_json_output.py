"""Issue 18.5: every task that prints a result takes --json and prints one document of one
shape (docs/task-output.schema.json), with ISO 8601 times; `current --check` exits 4 when the
database is not at head and 0 at head."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tasks.core.errors import ExitCode
from tests.conftest import ROOT
from tests.helpers import FIRST, HEAD

SCHEMA = json.loads((ROOT / "docs" / "task-output.schema.json").read_text())
JSON_TYPES = {
    "string": str,
    "boolean": bool,
    "integer": int,
    "array": list,
    "object": dict,
    "null": type(None),
}


def assert_matches_schema(document: dict) -> None:
    """The schema's own rules: required keys, no others, each key's type and const."""
    assert set(document) == set(SCHEMA["required"]), set(document) ^ set(SCHEMA["required"])
    for key, rule in SCHEMA["properties"].items():
        value = document[key]
        if "const" in rule:
            assert value == rule["const"], key
        kinds = rule.get("type")
        if kinds is not None:
            kinds = [kinds] if isinstance(kinds, str) else kinds
            assert any(
                isinstance(value, JSON_TYPES[kind]) and not (kind == "integer" and value is True)
                for kind in kinds
            ), f"{key}: {value!r} is not {kinds}"
    datetime.fromisoformat(document["started_at"])


@pytest.mark.parametrize(
    "argv",
    [
        ("local.current",),
        ("local.history",),
        ("local.heads",),
        ("local.show", "-r", "head"),
        ("local.branches",),
        ("local.check",),
        ("local.preflight",),
        ("local.stamp", "-r", FIRST, "--yes"),
        ("local.downgrade", "-r", "base", "--yes"),
        ("local.upgrade",),
    ],
    ids=lambda argv: argv[0],
)
def test_every_task_prints_one_document_of_the_one_shape(project, argv):
    assert project.invoke("local.upgrade").code == 0

    result = project.invoke_subprocess(*argv, "--json")

    document = json.loads(result.stdout)  # the whole of stdout is one document
    assert_matches_schema(document)
    assert document["command"] == argv[0]
    assert document["exit_code"] == result.code
    assert document["ok"] is (result.code == 0)


def test_ci_check_json(project, monkeypatch):
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    result = project.invoke_subprocess("ci.check", "--json")

    document = json.loads(result.stdout)
    assert_matches_schema(document)
    assert result.code == 0, result.output
    assert {item["check"] for item in document["details"]["checks"]} >= {"heads", "stairway"}


def test_current_check_says_whether_anything_is_pending(project):
    assert project.invoke("local.upgrade", "-r", FIRST).code == 0

    behind = project.invoke_subprocess("local.current", "--check", "--json")
    document = json.loads(behind.stdout)
    assert behind.code == ExitCode.DIFFERENCES
    assert document["details"]["pending"] == [HEAD] and document["details"]["at_head"] is False

    assert project.invoke("local.upgrade").code == 0
    assert project.invoke_subprocess("local.current", "-c").code == 0


def test_audit_times_are_iso_8601(project, tmp_path):
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{tmp_path / 'dev.sqlite3'}")
    assert project.invoke("dev.upgrade").code == 0

    rows = json.loads(project.invoke_subprocess("dev.audit", "--json").stdout)

    assert rows and "T" in rows[0]["started_at"]
    datetime.fromisoformat(rows[0]["started_at"])
