"""Issue 12.3: strict configuration. A key the defaults do not know is a one-line error (exit 2)
naming it and the closest known key, at every level; `invoke.yaml` carries only what differs from
`settings.DEFAULTS`, and the README's table documents every default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks.core.errors import ConfigError, ExitCode
from tasks.core.settings import DEFAULTS, check_known_keys
from tests.conftest import ROOT
from tests.helpers import assert_one_line_error, cli

MISSPELLINGS = [
    ("owner: tester@example.com", "migrations.owner", "migrations.owners"),
    ("lock_timout: '3'", "migrations.lock_timout", "migrations.lock_timeout"),
    (
        "environments: {production: {protectd: false}}",
        "migrations.environments.production.protectd",
        "migrations.environments.production.protected",
    ),
    (
        "environments: {qa: {url_variabel: X}}",
        "migrations.environments.qa.url_variabel",
        "migrations.environments.qa.url_variable",
    ),
    ("ci: {fail_onn: warning}", "migrations.ci.fail_onn", "migrations.ci.fail_on"),
    ("lint: {ignor: x}", "migrations.lint.ignor", "migrations.lint.ignore"),
]


def _config_file(tmp: Path, body: str) -> str:
    path = tmp / "extra.yaml"
    path.write_text(f"migrations:\n  {body}\n")
    return str(path)


@pytest.mark.parametrize(("body", "key", "hint"), MISSPELLINGS, ids=[m[1] for m in MISSPELLINGS])
def test_misspelled_key_is_one_line_error_and_changes_nothing(project, body, key, hint):
    """The misspelling that used to turn the ownership policy off now stops the run before any
    database is touched (the SQLite file is never created, the run log never opened)."""
    database = project.tmp / "dev.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{database}")

    result = project.invoke("-f", _config_file(project.tmp, body), "dev.upgrade")

    line = assert_one_line_error(result, ExitCode.USAGE, f"unknown setting {key} ")
    assert f"did you mean {hint}?" in line
    assert not database.exists()
    assert not project.log_file.exists()


def test_unknown_key_without_close_match_lists_the_known_ones(project):
    result = project.invoke("-f", _config_file(project.tmp, "zzzqqq: 1"), "dev.heads")

    line = assert_one_line_error(result, ExitCode.USAGE, "migrations.zzzqqq")
    assert "owners" in line and "lock_timeout" in line


def test_reading_tasks_are_strict_too(project):
    """`heads` needs no database, but a misspelled configuration still stops it."""
    result = project.invoke("-f", _config_file(project.tmp, "owner: x@y.z"), "dev.heads")

    assert_one_line_error(result, ExitCode.USAGE, "migrations.owner")


def test_section_that_must_be_a_mapping():
    """(Through Invoke, a scalar over a default mapping is Invoke's own merge error first.)"""
    with pytest.raises(ConfigError, match=r"migrations\.ci must be a mapping"):
        check_known_keys({"ci": "strict"})


def test_new_environment_names_are_free_but_their_keys_are_checked(project):
    body = "environments: {qa: {url_variable: DATABASE_URL_QA, protected: true}}"

    result = project.invoke("-f", _config_file(project.tmp, body), "dev.heads")

    assert result.code == 0, result.output


def test_any_key_in_defaults_is_known():
    """The schema is DEFAULTS itself: a key another module adds there is valid at once, at the
    top level, in a section, and in the entries of a map of named entries."""
    defaults = {
        **DEFAULTS,
        "new_top": "x",
        "ci": {**DEFAULTS["ci"], "new_ci": "1"},
        "environments": {
            **DEFAULTS["environments"],
            "staging": {**DEFAULTS["environments"]["staging"], "new_env_key": "y"},
        },
        "fleets": {},
    }
    raw = {
        "new_top": "z",
        "ci": {"new_ci": "2"},
        "environments": {"production": {"new_env_key": "1"}},
        "fleets": {"eu": {"anything": 1}},
    }

    check_known_keys(raw, defaults)
    with pytest.raises(ConfigError, match=r"migrations\.new_topp \(did you mean"):
        check_known_keys({"new_topp": 1}, defaults)


def test_defaults_pass_their_own_check():
    check_known_keys(DEFAULTS)


def _leaves(mapping: dict, prefix: str = "") -> dict[str, object]:
    found: dict[str, object] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            found.update(_leaves(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def test_invoke_yaml_carries_only_what_differs_from_the_defaults():
    from invoke import Config

    config = Config(project_location=str(ROOT))
    config.load_project()  # the file alone: no defaults given, no environment variables read
    migrations = dict(config.get("migrations") or {})

    check_known_keys(migrations)
    defaults = _leaves(DEFAULTS)
    same = [key for key, value in _leaves(migrations).items() if defaults.get(key) == value]
    assert same == [], f"invoke.yaml repeats defaults: {same}"


def _readme_configuration_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration\n", 1)[1].split("\n### ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        match = re.match(r"\| `([^`]+)` \|(.*)", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_readme_table_documents_every_default():
    """Every key of DEFAULTS has its row (environments as `environments.<name>`, whose row names
    every key an environment may carry), and a row shows each non-empty scalar default."""
    rows = _readme_configuration_rows()
    environment_keys = set()
    for key, value in _leaves(DEFAULTS).items():
        if key.startswith("environments."):
            environment_keys.add(key.split(".")[2])
            continue
        assert key in rows, f"README's configuration table has no row for {key}"
        if isinstance(value, str) and value and "," not in value:
            assert f"`{value}`" in rows[key], f"README's default for {key} is not `{value}`"
    for key in environment_keys:
        assert f"`{key}`" in rows["environments.<name>"], key


GARBLED = {
    "invalid-yaml": b"migrations: {owners: [\n",
    "not-utf-8": b"\xff\xfe garbage",
    "list-for-mapping": b"migrations:\n  - a\n",
    "mapping-for-text": b"migrations:\n  log_file: {a: 1}\n",
    "top-level-list": b"- 1\n",
}


@pytest.mark.hostile
@pytest.mark.parametrize("content", GARBLED.values(), ids=GARBLED.keys())
def test_garbled_configuration_file_is_one_line(project, content):
    config = project.tmp / "garbled.yaml"
    config.write_bytes(content)

    result = cli(project, "-f", str(config), "dev.heads")

    assert_one_line_error(result, ExitCode.USAGE)
