"""Invoke's entry point: the `local`, `dev`, `staging` and `prod` task collections.

Invoke loads this file before it would look at the `tasks/` folder, and plain Python prefers a
module over a folder without `__init__.py`. Setting `__path__` makes this module the package, so
`invoke`, `pytest` and `python` all import the one `tasks`, and `tasks.<module>` resolves into
`tasks/`. Keep this file free of heavy imports: `invoke --list` runs it.
"""

from pathlib import Path

__path__ = [str(Path(__file__).resolve().with_name("tasks"))]

from tasks.namespace import build_namespace

namespace = build_namespace()
