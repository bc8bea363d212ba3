"""Models against a live database: the fast diff, `local.sync` and drift in words."""
