"""Where an error happened in the operator's own code: `file:line` for one-line errors.

A NameError in a models module, env.py or a revision used to reach the operator as its message
alone. The one line now names the innermost frame of the original error (following `raise ...
from` and the implicit context that `from None` hides but keeps) that lies in the project's or
the application's code, not in the standard library, installed packages or these tasks. The full
traceback, for the run log and `--debug`, comes from `full_traceback`.
"""

from __future__ import annotations

import logging
import sys
import sysconfig
import traceback
from pathlib import Path

from tasks.core.redaction import redact
from tasks.core.settings import PROJECT_ROOT

_TOOL_CODE = (PROJECT_ROOT / "tasks", PROJECT_ROOT / "tasks.py")


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(key, "") for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return tuple(sorted(str(Path(root).resolve()) for root in roots if root))


def _chain(error: BaseException | None) -> list[BaseException]:
    """The error, then its cause or context, and so on: the original error comes last."""
    seen: set[int] = set()
    found: list[BaseException] = []
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found.append(error)
        error = error.__cause__ or error.__context__
    return found


def is_user_file(filename: str, libraries: tuple[str, ...] | None = None) -> bool:
    """Code the operator wrote: not `<frozen ...>`, the standard library, a virtualenv's
    packages or this tool's own `tasks/`."""
    if not filename or filename.startswith("<"):
        return False
    path = Path(filename).resolve()
    text = str(path)
    if "site-packages" in path.parts or "dist-packages" in path.parts:
        return False
    if any(text == root or text.startswith(root + "/") for root in libraries or _library_roots()):
        return False
    return not any(path == tool or tool in path.parents for tool in _TOOL_CODE)


def code_location(error: BaseException | None, root: Path = PROJECT_ROOT) -> str | None:
    """`file:line` of the innermost user-code frame of the original error, or None."""
    libraries = _library_roots()
    for item in reversed(_chain(error)):
        if (
            isinstance(item, SyntaxError)
            and item.filename
            and item.lineno
            and is_user_file(item.filename, libraries)
        ):
            return _format(item.filename, item.lineno, root)
        for frame in reversed(traceback.extract_tb(item.__traceback__)):
            if is_user_file(frame.filename, libraries):
                return _format(frame.filename, frame.lineno or 0, root)
    return None


def _format(filename: str, line: int, root: Path) -> str:
    path = Path(filename).resolve()
    try:
        shown = str(path.relative_to(root))
    except ValueError:
        shown = str(path)
    return f"{shown}:{line}"


def with_location(message: str, error: BaseException | None) -> str:
    """`message (file:line)` when the error came from user code and the message lacks it."""
    where = code_location(error)
    if where is None or where in message:
        return message
    return f"{message} ({where})"


def full_traceback(error: BaseException) -> str:
    """The whole chain, original error first, secrets masked (for the run log and --debug).

    Unlike Python's own printing this keeps the context that `raise ... from None` hides: the
    one-line errors are built that way, and the original is what a developer needs.
    """
    parts = [
        "".join(traceback.format_exception(type(item), item, item.__traceback__, chain=False))
        for item in reversed(_chain(error))
    ]
    return redact("\nwhich led to:\n\n".join(parts))


def debugging() -> bool:
    """Whether Invoke's --debug (or INVOKE_DEBUG) switched debug logging on."""
    return logging.getLogger("invoke").isEnabledFor(logging.DEBUG)
