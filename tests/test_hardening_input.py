"""Issue 11, items 7 and 8: hostile input that reached the wrong place.

Revision messages land in the new file only as data; configuration booleans, backups, pipes and
models modules that exit fail the documented way (one line, the right exit code).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tasks.errors import ExitCode
from tests.helpers import (
    HEAD,
    assert_ok,
    assert_one_line_error,
    copy_scripts,
    prepare,
    sqlite_url,
    venv_bin,
)

# --- item 7: hostile revision messages ----------------------------------------------------------


def _payload(sentinel: Path) -> str:
    """Code that, if the message ever leaves the docstring, leaves a file behind."""
    return f'"""\nimport pathlib\npathlib.Path({str(sentinel)!r}).write_text("ran")\n"""'


def _messages(sentinel: Path) -> dict[str, str]:
    return {
        "quotes": "it's \"quoted\" and 'single'",
        "backslashes": "C:\\new\\table \\N{BULLET} \\x41 \\u00e9 ends with \\",
        "newlines": "first line\nRevision ID: deadbeef0000\r\nRevises: nothing\n\n",
        "triple double": 'before """ after',
        "triple single": "before ''' after",
        "mako": "${__import__('os').system('false')} <%text>x</%text> % if x:",
        "code": _payload(sentinel),
        "control": "nul\x00 bell\x07 tab\t line\u2028separator",
        "long": "x" * 10_000 + ' """ ' + "y" * 300,
        "ends in a quote": 'the message ends with "',
    }


@pytest.fixture
def scripts(project):
    copy = copy_scripts(project.tmp / "scripts")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    return copy


def _import(path: Path):
    """Import a revision file the way Alembic does: as a module from its path."""
    spec = importlib.util.spec_from_file_location(f"revision_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _new_file(scripts, before: set[str]) -> Path:
    created = scripts.files() - before
    assert len(created) == 1, created
    return scripts.versions / created.pop()


def test_hostile_messages_land_in_the_file_as_data(project, scripts) -> None:
    """Each message: the task succeeds, the file imports, its docstring starts with the exact
    message, no code ran, and every later task (heads, current) still loads the scripts."""
    url = prepare(project, sqlite_url(project.tmp / "dev.sqlite3"), HEAD)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    sentinel = project.tmp / "code-ran"
    for name, message in _messages(sentinel).items():
        before = scripts.files()
        result = project.invoke("dev.revision", "-m", message)
        assert_ok(result)
        path = _new_file(scripts, before)
        module = _import(path)
        assert module.__doc__.startswith(message + "\n\nRevision ID: "), name
        assert module.revision in path.name
        assert not sentinel.exists(), name
        assert_ok(project.invoke("dev.heads"))
        assert_ok(project.invoke("dev.current"))
        assert not sentinel.exists(), name
        # Each new revision is the head: the next one revises it, so all of them are loaded.
        assert_ok(project.invoke("dev.stamp", "--rev", "head", "--yes"))


def test_plain_alembic_revision_uses_the_same_escaping(project, scripts) -> None:
    sentinel = project.tmp / "code-ran"
    before = scripts.files()
    result = project.run(
        venv_bin("alembic"), "-c", str(scripts.ini), "revision", "-m", _payload(sentinel)
    )
    assert result.code == 0, result.output
    path = _new_file(scripts, before)
    assert _import(path).__doc__.startswith(_payload(sentinel))
    assert not sentinel.exists()


NAIVE_TEMPLATE = '''"""${message}

Revision ID: ${up_revision}
"""
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
'''


@pytest.mark.parametrize("message", ['a """ b', 'x"""\nimport os\n"""'], ids=["breaks", "code"])
def test_a_template_that_does_not_escape_writes_nothing(project, scripts, message) -> None:
    """A team's own script.py.mako without escaping: the task deletes what it wrote and says so
    in one line, so the scripts keep loading (they used to fail with SyntaxError everywhere)."""
    (scripts.ini.parent / "alembic" / "script.py.mako").write_text(NAIVE_TEMPLATE)
    url = prepare(project, sqlite_url(project.tmp / "dev.sqlite3"), HEAD)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    before = scripts.files()
    result = project.invoke("dev.revision", "-m", message)
    assert_one_line_error(result, ExitCode.USAGE, "dev.revision:", "no revision written")
    assert scripts.files() == before
    assert_ok(project.invoke("dev.heads"))


def test_python_sees_the_repository_template_render_valid_python() -> None:
    """The template itself, rendered the way Alembic renders it, for the awkward characters."""
    from alembic.script import write_hooks  # noqa: F401 - Alembic's own imports for the template
    from alembic.util import format_as_comma
    from mako.template import Template

    from tests.conftest import ROOT

    template = Template(filename=str(ROOT / "alembic" / "script.py.mako"))  # noqa: S702
    for message in ["\\", '"', '\\"""', "\udc80", "\x00", "a\rb"]:
        source = template.render(
            message=message,
            comma=format_as_comma,
            up_revision="abc",
            down_revision=None,
            branch_labels=None,
            depends_on=None,
            create_date="2026-12-01",
            imports="",
            upgrades="",
            downgrades="",
        )
        namespace: dict = {}
        exec(compile(source, "revision.py", "exec"), namespace)  # noqa: S102 - our own template
        assert namespace["__doc__"].startswith(message + "\n"), repr(message)


def test_make_revision_keeps_msg_as_data(project, scripts) -> None:
    """`make revision MSG="$PR_TITLE"`: make used to expand $(shell ...) in MSG and paste the
    rest into a shell command line (quotes, backticks); now MSG reaches the task untouched."""
    url = prepare(project, sqlite_url(project.tmp / "dev.sqlite3"), HEAD)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    project.setenv("INVOKE_MIGRATIONS_METADATA", "tests.models_changed:metadata")
    sentinel = project.tmp / "make-ran"
    message = f'$(shell touch {sentinel}) "$$(touch {sentinel})" `touch {sentinel}` it\'s """'
    before = scripts.files()
    # -o: never rebuild the virtualenv from a test, whatever the requirements' timestamps say.
    result = project.run("make", "-o", ".venv/.runtime", "revision", f"MSG={message}")
    assert result.code == 0, result.output
    assert not sentinel.exists()
    assert _import(_new_file(scripts, before)).__doc__.startswith(message + "\n")
