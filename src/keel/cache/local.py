"""Placeholder: replaced by the machine-shared SQLite store."""

from __future__ import annotations

import os

from keel._clock import Clock
from keel.cache.memory import MemoryStore

__all__ = ["LocalStore"]


class LocalStore(MemoryStore):
    def __init__(self, path: str | os.PathLike[str], clock: Clock) -> None:
        super().__init__(clock)
        self.path = path
