"""Invoke's entry point: the `local`, `dev`, `staging`, `prod`, `fleet` and `ci` collections.

Invoke takes this file before it would look at the `tasks/` package (field notes) and runs it as
the module `tasks`. The library is the package `tasks/` (plain Python, IDEs and import tools
resolve `tasks` to the package, which wins over a module of the same name), so the module name is
handed back to the package before importing from it. Keep this file free of heavy imports:
`invoke --list` runs it.
"""

import sys

if not hasattr(sys.modules.get("tasks"), "__path__"):
    sys.modules.pop("tasks", None)

from tasks.cli.namespace import build_namespace

namespace = build_namespace()
