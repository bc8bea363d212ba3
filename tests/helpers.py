"""Assertions and builders shared by the foundation's test modules (fixtures stay in conftest.py
and in each module). Nothing here touches the repository's own databases, logs or scripts."""

from __future__ import annotations

import io
import shutil
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import ExitCode
from tests.conftest import ROOT, Result

FIRST = "299ef84b3388"  # create users and projects
HEAD = "ef2b2790809e"  # add memberships
APP_TABLES = {"users", "projects", "memberships"}
SECRET = "Sup3rS3cretPw"

# Scripts a test writes never go into the repository's alembic/versions. Copies that must live
# inside the project (the revision task prints paths relative to it) go under this ignored folder.
SCRATCH_IN_REPO = ROOT / ".pytest_cache" / "migration-tests"


def venv_bin(name: str) -> str:
    """An executable of the virtualenv running the tests (the project's .venv under `make test`)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return str(ROOT / ".venv" / "bin" / name)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def stderr_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_line_error(result: Result, code: int, *needles: str) -> str:
    """The bad-input contract: this exit code, one non-empty stderr line, no traceback."""
    assert result.code == int(code), f"exit {result.code}, expected {int(code)}:\n{result.output}"
    lines = stderr_lines(result)
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def assert_ok(result: Result) -> None:
    assert result.code == ExitCode.OK, result.output
    assert "Traceback" not in result.output


def table_names(snapshot: dict) -> set[str]:
    return set(snapshot) - {"alembic_version"}


def version_rows(snapshot: dict) -> list[str]:
    return snapshot.get("alembic_version", {}).get("rows", [])


class FakeTerminal(io.StringIO):
    """Stdin that claims to be a terminal, with the operator's answers already typed."""

    def isatty(self) -> bool:
        return True


@dataclass
class ScriptCopy:
    """A private alembic.ini and alembic/ folder, selected through INVOKE_MIGRATIONS_ALEMBIC_INI."""

    ini: Path
    versions: Path

    def files(self) -> set[str]:
        return {path.name for path in self.versions.glob("*.py")}

    def add_merge(self, revision: str, parents: tuple[str, str], message: str) -> Path:
        """A merge revision joining `parents`, doing nothing (`message` is its docstring)."""
        path = self.versions / "merge.py"
        path.write_text(
            f'"""{message}"""\n'
            f"revision = {revision!r}\n"
            f"down_revision = {parents!r}\n"
            "branch_labels = None\n"
            "depends_on = None\n\n\n"
            "def upgrade() -> None:\n    pass\n\n\n"
            "def downgrade() -> None:\n    pass\n"
        )
        return path

    def add_branch(self, revision: str = "b0b0b0b0b0b0", down_revision: str = FIRST) -> Path:
        """A second head: a revision that, like ef2b2790809e, revises `down_revision`."""
        path = self.versions / f"{revision}_second_branch.py"
        path.write_text(
            textwrap.dedent(
                f'''\
                """a second branch

                Revision ID: {revision}
                Revises: {down_revision}
                """

                revision = "{revision}"
                down_revision = "{down_revision}"
                branch_labels = None
                depends_on = None


                def upgrade() -> None:
                    pass


                def downgrade() -> None:
                    pass
                '''
            )
        )
        return path


def copy_scripts(destination: Path) -> ScriptCopy:
    """Copy the project's alembic.ini and alembic/ folder (env.py, revisions) to `destination`."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "alembic.ini", destination / "alembic.ini")
    shutil.copytree(
        ROOT / "alembic",
        destination / "alembic",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return ScriptCopy(destination / "alembic.ini", destination / "alembic" / "versions")


@contextmanager
def scripts_inside_project() -> Iterator[ScriptCopy]:
    """A script copy under the project root (git-ignored), removed afterwards."""
    destination = SCRATCH_IN_REPO / uuid.uuid4().hex[:12]
    try:
        yield copy_scripts(destination)
    finally:
        shutil.rmtree(destination, ignore_errors=True)
        with suppress(OSError):
            SCRATCH_IN_REPO.rmdir()  # only when no other run is using it


def prepare(project, url: str, revision: str = HEAD) -> str:
    """Bring the database at `url` to `revision` through the unprotected dev collection (no
    prompt, no backup, no ownership policy), leaving the environment variables as they were."""
    import os

    saved = {name: os.environ.get(name) for name in PREPARE_OVERRIDES}
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    project.monkeypatch.delenv("INVOKE_MIGRATIONS_OWNERS", raising=False)
    for name in PREPARE_OVERRIDES[2:]:  # dev on a stricter environment's database is refused
        project.monkeypatch.delenv(name, raising=False)
    try:
        assert_ok(project.invoke("dev.upgrade", "--rev", revision))
    finally:
        for name, value in saved.items():
            if value is None:
                project.monkeypatch.delenv(name, raising=False)
            else:
                project.setenv(name, value)
    return url


PREPARE_OVERRIDES = (
    "DATABASE_URL_DEVELOPMENT",
    "INVOKE_MIGRATIONS_OWNERS",
    "DATABASE_URL_STAGING",
    "DATABASE_URL_PRODUCTION",
    "INVOKE_MIGRATIONS_ENVIRONMENTS_DEVELOPMENT_URL_VARIABLE",
)


def terminal(*argv: str):  # -> pexpect.spawn
    """`invoke ARGV...` in a real pseudo-terminal, wide enough that lines do not wrap."""
    import os

    import pexpect

    return pexpect.spawn(
        sys.executable,
        ["-m", "invoke", *argv],
        cwd=str(ROOT),
        env=dict(os.environ),
        encoding="utf-8",
        timeout=60,
        dimensions=(24, 200),
    )


def cli(project, *argv: str):  # type: ignore[no-untyped-def]
    """The installed `invoke` script, as a user's shell runs it."""
    return project.run(venv_bin("invoke"), *argv)


def outside_code(markdown: str) -> str:
    """The text GitHub renders as Markdown/HTML: fenced blocks and CommonMark code spans (a run
    of N backticks closed by the next run of exactly N) removed."""
    import re

    kept, fence = [], None
    for line in markdown.splitlines():
        run = re.match(r"^(`{3,})", line)
        if fence is None and run:
            fence = run.group(1)
            continue
        if fence is not None:
            if line.strip() == fence:
                fence = None
            continue
        text, index = "", 0
        while index < len(line):
            run = re.match(r"`+", line[index:])
            if not run:
                text += line[index]
                index += 1
                continue
            ticks = run.group(0)
            close = re.search(rf"(?<!`){ticks}(?!`)", line[index + len(ticks) :])
            if close is None:
                text += ticks
                index += len(ticks)
                continue
            index += len(ticks) + close.end()
        kept.append(text)
    return "\n".join(kept)
