"""``CountingStore``: a ``Store`` that records every call it forwards, to pin down a path's cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from keel.cache import CacheStatus, Store

__all__ = ["CountingStore"]


@dataclass
class CountingStore:
    """Forwards to ``inner``; ``calls`` holds each call as ``"<operation> <key> ..."``."""

    inner: Store
    calls: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)

    def _record(self, operation: str, *keys: str) -> None:
        self.calls.append(" ".join((operation, *keys)))
        self.keys.update(keys)

    def take(self) -> list[str]:
        """The operations (without keys) called since the last ``take``, in order."""
        calls, self.calls = self.calls, []
        return [call.split(" ", 1)[0] for call in calls]

    async def get(self, key: str) -> bytes | None:
        self._record("get", key)
        return await self.inner.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self._record("get_many", *keys)
        return await self.inner.get_many(keys)

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._record("set", key)
        await self.inner.set(key, value, ttl=ttl)

    async def add(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        self._record("add", key)
        return await self.inner.add(key, value, ttl=ttl)

    async def set_if_newer(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        self._record("set_if_newer", key)
        return await self.inner.set_if_newer(key, value, ttl=ttl)

    async def delete(self, key: str) -> None:
        self._record("delete", key)
        await self.inner.delete(key)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        self._record("incr", key)
        return await self.inner.incr(key, amount, ttl=ttl)

    async def ttl(self, key: str) -> float | None:
        self._record("ttl", key)
        return await self.inner.ttl(key)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()

    @property
    def status(self) -> CacheStatus:
        return self.inner.status
