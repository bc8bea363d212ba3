"""Run `python -m invoke ...` in a new process without paying Python's imports each time.

The suite runs the tasks in a fresh process a few hundred times (adopted applications whose
packages must not leak into the test worker, piped stdin, whole real applications). Most of such
a process's CPU is importing SQLAlchemy, Alembic and Invoke, and for a real application its own
package: 0.45 s of a 0.65 s `local.sync`, 4.5 s of a 5 s Prefect `dev.current`. A fork server
imports those once, then forks for every command: each command still runs in a process of its
own, with its own environment, working directory, stdin, stdout, stderr, `sys.path` from its
PYTHONPATH, atexit handlers and exit status, through `python -m invoke` exactly as the CLI runs;
it only finds the libraries already imported. The project's own packages are never imported
before the fork, so the tasks load as they do in a fresh process.

What a fork cannot change is decided at interpreter start-up: a command whose environment differs
from the server's in such a variable (PYTHON*, LANG, LC_*) runs in a real subprocess instead.
Tests about processes themselves (signals, terminals, start-up imports) use real subprocesses.

Run as a script, this file is the server: `python fork_server.py SOCKET [MODULE...]`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

# Interpreter start-up reads these; a fork keeps the server's.
STARTUP_PREFIXES = ("PYTHON", "LANG", "LC_")
STARTUP_EXEMPT = ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")

# What every task imports and nothing in a test asks to be absent.
LIBRARIES = (
    "invoke",
    "invoke.program",
    "sqlalchemy",
    "sqlalchemy.orm",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.mysql",
    "sqlalchemy.dialects.sqlite",
    "alembic.command",
    "alembic.autogenerate",
    "alembic.operations",
    "alembic.runtime.migration",
    "alembic.script",
    "psycopg2",
    "pymysql",
    "dotenv",
)


def _send(connection: socket.socket, message: dict) -> None:
    data = json.dumps(message).encode()
    connection.sendall(struct.pack("!I", len(data)) + data)


def _receive(connection: socket.socket) -> dict | None:
    header = _read_exactly(connection, 4)
    if header is None:
        return None
    body = _read_exactly(connection, struct.unpack("!I", header)[0])
    return None if body is None else json.loads(body)


def _read_exactly(connection: socket.socket, size: int) -> bytes | None:
    chunks = b""
    while len(chunks) < size:
        chunk = connection.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return chunks


def startup_differs(env: dict[str, str], server_env: dict[str, str]) -> bool:
    """Whether ENV sets an interpreter start-up variable otherwise than the server started with."""

    def startup(environment: dict[str, str]) -> dict[str, str]:
        return {
            name: value
            for name, value in environment.items()
            if name.startswith(STARTUP_PREFIXES) and name not in STARTUP_EXEMPT
        }

    return startup(env) != startup(server_env)


class ForkServer:
    """A server started by the test process: `run` is `subprocess.run([python, *argv])`."""

    def __init__(self, python: str, modules: Sequence[str] = LIBRARIES) -> None:
        self._folder = tempfile.mkdtemp(prefix="fork-server-")  # a socket path stays short
        self._socket = str(Path(self._folder) / "socket")
        self._started_with = dict(os.environ)
        self._process = subprocess.Popen(
            [python, __file__, self._socket, *modules],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self._started_with,
        )
        ready = self._process.stdout.readline() if self._process.stdout else b""
        if ready != b"ready\n":
            self.close()
            raise RuntimeError(f"the fork server for {python} did not start")

    def accepts(self, env: dict[str, str]) -> bool:
        return self._process.poll() is None and not startup_differs(env, self._started_with)

    def run(
        self, argv: Sequence[str], *, cwd: str, env: dict[str, str], input: str, timeout: float
    ) -> tuple[int, str, str]:
        """Exit status, stdout and stderr of `python ARGV...` (ARGV starts with -m or -c)."""
        with tempfile.TemporaryDirectory(dir=self._folder) as files:
            stdout, stderr = Path(files) / "stdout", Path(files) / "stderr"
            stdout.touch()
            stderr.touch()
            request = {"argv": list(argv), "cwd": cwd, "env": env, "input": input,
                       "stdout": str(stdout), "stderr": str(stderr)}  # fmt: skip
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(timeout)
                connection.connect(self._socket)
                _send(connection, request)
                started = _receive(connection)
                try:
                    finished = _receive(connection)
                except TimeoutError:
                    if started:
                        os.kill(started["pid"], signal.SIGKILL)
                    raise subprocess.TimeoutExpired(list(argv), timeout) from None
            if started is None or finished is None:
                raise RuntimeError(f"the fork server lost the command {list(argv)}")
            out = stdout.read_text(encoding="utf-8", errors="replace")
            err = stderr.read_text(encoding="utf-8", errors="replace")
            return finished["code"], out, err

    def close(self) -> None:
        if self._process.stdin:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
        shutil.rmtree(self._folder, ignore_errors=True)


# --- the server ----------------------------------------------------------------------------


def _serve(path: str, modules: list[str]) -> None:
    import gc
    import importlib
    import selectors

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:  # not installed here: the command imports it, or fails, itself
            continue
    gc.freeze()  # the commands' collections skip what was preloaded (and leave its pages shared)
    own_path = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    base_path = [entry for entry in sys.path[1:] if entry not in own_path]
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-command waiters reap themselves
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    watch = selectors.DefaultSelector()
    watch.register(listener, selectors.EVENT_READ)
    watch.register(sys.stdin, selectors.EVENT_READ)  # EOF: the test process is gone
    while True:
        for key, _ in watch.select():
            if key.fileobj is not listener:
                return
            connection, _ = listener.accept()
            if os.fork() == 0:
                watch.close()
                listener.close()
                _wait_for_command(connection, base_path)
            connection.close()


def _wait_for_command(connection: socket.socket, base_path: list[str]) -> None:
    """The waiter: forks the command's process, reports its pid, then its exit status."""

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    request = _receive(connection)
    if request is None:
        os._exit(0)
    stdin_read, stdin_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        connection.close()
        os.close(stdin_write)
        _exit_as_python_would(request, stdin_read, base_path)
    os.close(stdin_read)
    os.write(stdin_write, request["input"].encode())  # small: fits the pipe's buffer
    os.close(stdin_write)
    _send(connection, {"pid": pid})
    _, status = os.waitpid(pid, 0)
    with contextlib.suppress(OSError):  # the test gave up waiting (a timeout) and hung up
        _send(connection, {"code": os.waitstatus_to_exitcode(status)})
    os._exit(0)


def _exit_as_python_would(request: dict, stdin: int, base_path: list[str]) -> None:
    """Run the command, then end as the interpreter ends a program, minus tearing down the
    preloaded modules (0.6 s for Prefect's): the exit status Python gives SystemExit or an
    uncaught exception (its traceback on stderr), non-daemon threads joined, atexit handlers
    run, the standard streams flushed."""
    import atexit
    import threading

    code = 0
    try:
        _become_command(request, stdin, base_path)
    except SystemExit as exit_:
        code = _exit_status(exit_.code)
    except BaseException as error:  # reported as Python reports it, from the command's frames
        trace = error.__traceback__
        while trace is not None and trace.tb_frame.f_code.co_filename == __file__:
            trace = trace.tb_next
        sys.excepthook(type(error), error.with_traceback(trace), trace)
        code = -signal.SIGINT if isinstance(error, KeyboardInterrupt) else 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed by the command itself
            stream.flush()
    if code < 0:  # killed by a signal, as Python reports an uncaught KeyboardInterrupt
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _become_command(request: dict, stdin: int, base_path: list[str]) -> None:
    """Turn this fork into `python ARGV...`: its files, environment, path, then its code."""
    import runpy

    for fd, target in ((0, None), (1, request["stdout"]), (2, request["stderr"])):
        opened = stdin if target is None else os.open(target, os.O_WRONLY | os.O_TRUNC)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    pythonpath = [
        str(Path(entry).absolute())
        for entry in request["env"].get("PYTHONPATH", "").split(os.pathsep)
        if entry
    ]
    option, target, *arguments = request["argv"]
    if option == "-m":
        sys.path[:] = [str(Path.cwd()), *pythonpath, *base_path]
        sys.argv = ["-m", *arguments]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:  # -c
        sys.path[:] = ["", *pythonpath, *base_path]
        sys.argv = ["-c", *arguments]
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2:])
