"""The fork server (tests/fork_server.py) runs a command as a fresh `python` would: the tests that
use it rely on that. Each program here runs both ways and must give the same exit status, stdout
and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fork_server import LIBRARIES, ForkServer

PROGRAMS = {
    "exit status": "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
    "exit message": "import sys; sys.exit('gone wrong')",
    "uncaught exception": "raise ValueError('boom')",
    "stdin": "import sys; print(sys.stdin.read().upper(), sys.stdin.isatty())",
    "environment and cwd": "import os; print(os.environ['FORK_PROBE'], os.getcwd())",
    "argv": "import sys; print(sys.argv)",
    "sys.path from PYTHONPATH": "import sys; print([p for p in sys.path if 'probe-path' in p])",
    "atexit and threads": (
        "import atexit, threading, time\n"
        "atexit.register(print, 'atexit ran')\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start()\n"
    ),
    "unflushed output": "import sys; sys.stdout.write('no newline')",
    "killed by a signal": (
        "import os, signal; print('dying', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    ),
    "interrupted": "raise KeyboardInterrupt",
    "a module as __main__": None,  # -m json.tool
}


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    started = ForkServer(sys.executable, LIBRARIES)
    yield started
    started.close()


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_a_forked_command_is_what_a_fresh_python_gives(server, tmp_path: Path, name: str):
    code = PROGRAMS[name]
    argv = ["-m", "json.tool"] if code is None else ["-c", code, "first", "second"]
    env = {**os.environ, "FORK_PROBE": "probe value", "PYTHONPATH": str(tmp_path / "probe-path")}
    given = '{"a": [1, 2]}' if code is None else "some input"

    fresh = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, input=given,
                           capture_output=True, text=True, check=False)  # fmt: skip
    forked = server.run(argv, cwd=str(tmp_path), env=env, input=given, timeout=60)

    assert forked == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.stdout or fresh.stderr  # each program says something to compare


def test_a_start_up_variable_sends_the_command_to_a_real_subprocess(server):
    assert server.accepts(dict(os.environ))
    assert not server.accepts({**os.environ, "PYTHONIOENCODING": "latin-1"})


def test_a_command_past_its_timeout_is_killed(server):
    with pytest.raises(subprocess.TimeoutExpired):
        server.run(["-c", "import time; time.sleep(60)"], cwd="/", env=dict(os.environ),
                   input="", timeout=1)  # fmt: skip
    assert server.run(["-c", "print('next')"], cwd="/", env=dict(os.environ), input="",
                      timeout=30) == (0, "next\n", "")  # fmt: skip
