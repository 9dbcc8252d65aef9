"""MemoryStore specifics: bounded memory without eviction, clock-driven expiry."""

from __future__ import annotations

import pytest

from keel._clock import FrozenClock
from keel.cache import MemoryStore
from keel.errors import CacheFull, CacheUnavailable
from tests.unit.cache._revocation import revoke, still_revoked


async def test_full_store_refuses_a_new_key_and_keeps_every_old_one(clock: FrozenClock) -> None:
    store = MemoryStore(clock, max_entries=3)
    for key in ("a", "b", "c"):
        await store.set(key, b"v")
    for write in (
        store.set("d", b"v"),
        store.add("d", b"v", ttl=None),
        store.incr("d"),
        store.set("e", b"v", ttl=5),
    ):
        with pytest.raises(CacheFull) as caught:
            await write
        assert caught.value.code == "cache_full"
        assert isinstance(caught.value, CacheUnavailable)  # callers fail closed on it
    assert [await store.get(k) for k in ("a", "b", "c", "d", "e")] == [b"v", b"v", b"v", None, None]
    # Existing keys still take writes, and a delete makes room for a new key.
    await store.set("a", b"rewritten", ttl=60)
    await store.set("c", b"7")
    assert await store.incr("c") == 8
    assert await store.add("a", b"x", ttl=None) is False
    await store.delete("b")
    await store.set("d", b"new")
    assert [await store.get(k) for k in ("a", "b", "c", "d")] == [b"rewritten", None, b"8", b"new"]


async def test_sec_36_a_revocation_outlives_a_flood_of_other_keys(clock: FrozenClock) -> None:
    store = MemoryStore(clock, max_entries=1_000)
    await revoke(store, "victim", "victim-session")
    refused = 0
    for i in range(10_000):
        try:
            await store.incr(f"flood:{i}", ttl=60)
        except CacheFull:
            refused += 1
    assert refused == 10_000 - 998  # the session's end and its subject's record hold two keys
    assert await still_revoked(store, "victim", "victim-session")


async def test_expired_keys_make_room_before_a_new_key_is_refused(clock: FrozenClock) -> None:
    store = MemoryStore(clock, max_entries=3)
    await store.set("old-live", b"v")
    await store.set("short", b"v", ttl=1)
    await store.incr("window", ttl=1)
    with pytest.raises(CacheFull):
        await store.set("new1", b"v")
    clock.advance(1)
    await store.set("new1", b"v")
    await store.set("new2", b"v")
    # Both expired keys made room; the oldest live key is still there.
    assert [await store.get(k) for k in ("old-live", "new1", "new2")] == [b"v", b"v", b"v"]
    with pytest.raises(CacheFull):
        await store.set("new3", b"v")


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
        await store.set(f"k{i % 50}", b"v", ttl=60)
        await store.incr(f"n{i}", ttl=1)
        clock.advance(0.05)  # each counter lives 20 writes: expired ones make the room
    assert len(store._data) <= 100
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


async def test_sec_36_a_revocation_outlives_100000_writes_to_memory(clock: FrozenClock) -> None:
    store = MemoryStore(clock, max_entries=100_002)
    await revoke(store, "victim", "victim-sid")
    for i in range(100_000):
        await store.set(f"other:{i}", b"other", ttl=3600)
    assert await still_revoked(store, "victim", "victim-sid")
    # At the bound a MemoryStore refuses new keys instead of dropping old ones.
    with pytest.raises(CacheFull):
        await store.set("one-more", b"v")
    assert await store.get("other:0") == b"other"
    assert await still_revoked(store, "victim", "victim-sid")
