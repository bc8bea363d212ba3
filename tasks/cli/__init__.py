"""The Invoke layer: collections, flags, and turning a run's outcome into an exit code.

The only package that imports `invoke`; every task is a thin function over the library below."""
