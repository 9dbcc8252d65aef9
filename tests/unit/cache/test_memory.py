"""MemoryStore specifics: bounded memory, eviction order, clock-driven expiry."""

from __future__ import annotations

import pytest

from keel._clock import FrozenClock
from keel.cache import MemoryStore


async def test_full_store_evicts_the_least_recently_written(clock: FrozenClock) -> None:
    store = MemoryStore(clock, max_entries=3)
    for key in ("a", "b", "c"):
        await store.set(key, b"v")
    await store.set("a", b"rewritten")  # a is now the youngest
    await store.set("d", b"v")
    assert await store.get("b") is None
    assert [await store.get(k) for k in ("a", "c", "d")] == [b"rewritten", b"v", b"v"]


async def test_expired_keys_are_purged_before_live_ones_are_evicted(clock: FrozenClock) -> None:
    store = MemoryStore(clock, max_entries=3)
    await store.set("old-live", b"v")
    await store.set("short", b"v", ttl=1)
    await store.incr("window", ttl=1)
    clock.advance(1)
    await store.set("new1", b"v")
    await store.set("new2", b"v")
    # Both expired keys made room; the oldest live key survived.
    assert await store.get("old-live") == b"v"
    assert await store.get("new1") == b"v"
    assert await store.get("new2") == b"v"


async def test_expiry_is_exact_on_the_monotonic_clock(clock: FrozenClock) -> None:
    store = MemoryStore(clock)
    await store.set("k", b"v", ttl=10)
    clock.advance(9.999)
    assert await store.get("k") == b"v"
    clock.advance(0.001)
    assert await store.get("k") is None


async def test_memory_stays_bounded_under_churn(clock: FrozenClock) -> None:
    store = MemoryStore(clock, max_entries=100)
    for i in range(5_000):
        await store.set(f"k{i % 150}", b"v", ttl=60)
        await store.incr(f"n{i}", ttl=60)
    assert sum([await store.get(f"n{i}") is not None for i in range(5_000)]) <= 100
    # The expiry heap is compacted too, not only the key table.
    assert len(store._expiries) <= 2 * 100 + 64


async def test_close_drops_everything(clock: FrozenClock) -> None:
    store = MemoryStore(clock)
    await store.set("k", b"v", ttl=5)
    await store.close()
    assert await store.get("k") is None


def test_max_entries_must_be_positive(clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryStore(clock, max_entries=0)
