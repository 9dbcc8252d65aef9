"""``MemoryStore``: an in-process cache with the same semantics as Redis.

It is the embedded default (no ``REDIS_URL``) and the fallback while Redis is
down. Its contents are per-process: two workers never see each other's keys.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from keel._clock import Clock
from keel.cache.store import (
    CacheStatus,
    incremented,
    is_newer,
    validate_ttl,
    validate_versioned,
)
from keel.errors import CacheFull

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires_at: float | None
    # Identifies this write, so a stale expiry-heap item for an overwritten key is ignored.
    seq: int


class MemoryStore:
    """An in-process ``Store`` bounded to ``max_entries`` live keys.

    Expiry follows ``clock.monotonic()``, so a test advances a ``FrozenClock``
    instead of sleeping. Expired keys are dropped when touched and, on every
    write, through a heap ordered by expiry time.

    Nothing is ever evicted: the keys it holds are security state (lockouts,
    revocations, rate-limit windows), and dropping one to make room would let
    an attacker erase it by writing others. When ``max_entries`` live keys are
    held, a write that would add a new key raises ``CacheFull`` (a
    ``CacheUnavailable``: callers fail closed); writes to existing keys and
    deletes still work.

    Asyncio-safe: no operation awaits anything, so each one runs to completion
    without interleaving on the event loop. Not for use from other threads.
    """

    def __init__(self, clock: Clock, *, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._max_entries = max_entries
        self._data: dict[str, _Entry] = {}
        self._expiries: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return f"MemoryStore(entries={len(self._data)}, max_entries={self._max_entries})"

    @property
    def status(self) -> CacheStatus:
        """Always ``"ok"``: process memory does not go away."""
        return "ok"

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None`` when absent or expired."""
        entry = self._live(key, self._clock.monotonic())
        return None if entry is None else entry.value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under ``keys``, in order; ``None`` for each absent or expired one."""
        now = self._clock.monotonic()
        found: list[bytes | None] = []
        for key in keys:
            entry = self._live(key, now)
            found.append(None if entry is None else entry.value)
        return found

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any value and any previous expiry."""
        validate_ttl(ttl)
        now = self._clock.monotonic()
        self._write(key, value, None if ttl is None else now + ttl, now)

    async def add(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent; ``True`` when this call stored it."""
        validate_ttl(ttl)
        now = self._clock.monotonic()
        if self._live(key, now) is not None:
            return False
        self._write(key, value, None if ttl is None else now + ttl, now)
        return True

    async def set_if_newer(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store the versioned ``value`` unless ``key`` holds one at least as new."""
        validate_ttl(ttl)
        validate_versioned(value)
        now = self._clock.monotonic()
        entry = self._live(key, now)
        if not is_newer(value, None if entry is None else entry.value):
            return False
        self._write(key, value, None if ttl is None else now + ttl, now)
        return True

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        self._data.pop(key, None)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add ``amount`` to the counter under ``key``; ``ttl`` applies only on creation."""
        validate_ttl(ttl)
        now = self._clock.monotonic()
        entry = self._live(key, now)
        if entry is None:
            result = incremented(None, amount)
            self._write(key, b"%d" % result, None if ttl is None else now + ttl, now)
            return result
        result = incremented(entry.value, amount)
        # In place, keeping the expiry (fixed window) and the heap item's seq valid.
        entry.value = b"%d" % result
        return result

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when absent or without expiry."""
        now = self._clock.monotonic()
        entry = self._live(key, now)
        if entry is None or entry.expires_at is None:
            return None
        return entry.expires_at - now

    async def ping(self) -> None:
        """Memory always answers."""

    async def close(self) -> None:
        """Drop every key."""
        self._data.clear()
        self._expiries.clear()

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
            del self._data[key]
            return None
        return entry

    def _write(self, key: str, value: bytes, expires_at: float | None, now: float) -> None:
        self._purge_expired(now)
        if key not in self._data and len(self._data) >= self._max_entries:
            # Every key held is live (expired ones were purged just above).
            raise CacheFull(f"the in-process cache holds its maximum of {self._max_entries} keys")
        seq = next(self._seq)
        self._data[key] = _Entry(value, expires_at, seq)
        if expires_at is not None:
            heapq.heappush(self._expiries, (expires_at, seq, key))
            self._compact_expiries()

    def _purge_expired(self, now: float) -> None:
        # Each heap item is popped once, so purging costs O(log n) per write amortised.
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _, seq, key = heapq.heappop(heap)
            entry = self._data.get(key)
            if entry is not None and entry.seq == seq:
                del self._data[key]

    def _compact_expiries(self) -> None:
        # Overwritten and deleted keys leave stale heap items behind; rebuild
        # the heap when they outnumber the live keys so memory stays bounded.
        if len(self._expiries) <= 2 * len(self._data) + 64:
            return
        self._expiries = [
            (entry.expires_at, entry.seq, key)
            for key, entry in self._data.items()
            if entry.expires_at is not None
        ]
        heapq.heapify(self._expiries)
