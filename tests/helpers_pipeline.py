"""Pipeline stages for the pool tests: module-level, so that a process
started with `spawn` or `forkserver` can import them by name."""

from __future__ import annotations

import os

import permafrost as pf


class Lookup:
    """A callable stage holding a read-only table (a view of an image):
    what a user's pipeline step looks like."""

    def __init__(self, table):
        self.table = table

    def __call__(self, key):
        value = self.table.get(key)
        return key, pf.thaw(value), len(self.table)


class WhereAmI(Lookup):
    """Lookup that also says which process answered."""

    def __call__(self, key):
        return super().__call__(key), os.getpid()
