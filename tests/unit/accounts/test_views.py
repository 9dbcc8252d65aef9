"""keel.accounts.views: a read's fill never overwrites a change's refresh; failures are misses."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from keel._clock import FrozenClock
from keel.accounts.views import VIEW_TTL, UserView, UserViewCache
from keel.cache import MemoryStore, RedisStore, Store
from keel.errors import CacheUnavailable

VIEW = UserView(
    id="3f1c2a9e-0000-4000-8000-000000000001",
    email="viewer@keel.example",
    email_verified=True,
    display_name=None,
    roles=("user",),
    is_active=True,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    updated_at=datetime(2026, 1, 2, tzinfo=UTC),
)


class DownStore(MemoryStore):
    async def get(self, key: str) -> bytes | None:
        raise CacheUnavailable("down")

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        raise CacheUnavailable("down")

    async def add(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        raise CacheUnavailable("down")

    async def delete(self, key: str) -> None:
        raise CacheUnavailable("down")


def test_json_round_trip() -> None:
    assert UserView.from_json(VIEW.to_json()) == VIEW


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, clock: FrozenClock) -> AsyncIterator[Store]:
    if request.param == "memory":
        chosen: Store = MemoryStore(clock)
    else:
        namespace: str = request.getfixturevalue("redis_namespace")
        url: str = request.getfixturevalue("redis_url")
        chosen = RedisStore(url, namespace=namespace, timeout=1.0)
    try:
        yield chosen
    finally:
        await chosen.close()


async def test_fill_never_replaces_a_refresh(store: Store) -> None:
    cache = UserViewCache(store)
    fresh = dataclasses.replace(VIEW, display_name="Fresh")
    await cache.refresh(fresh)
    await cache.fill(VIEW)  # a slow reader's stale row
    assert await cache.get(VIEW.id) == fresh
    await cache.discard(VIEW.id)
    assert await cache.get(VIEW.id) is None
    await cache.fill(VIEW)
    assert await cache.get(VIEW.id) == VIEW
    ttl = await store.ttl(UserViewCache.key(VIEW.id))
    assert ttl is not None
    assert 0 < ttl <= VIEW_TTL


async def test_entries_expire(clock: FrozenClock) -> None:
    cache = UserViewCache(MemoryStore(clock))
    await cache.fill(VIEW)
    assert await cache.get(VIEW.id) == VIEW
    clock.advance(VIEW_TTL + 1)
    assert await cache.get(VIEW.id) is None


async def test_corrupt_entry_is_a_miss(clock: FrozenClock) -> None:
    store = MemoryStore(clock)
    await store.set(UserViewCache.key(VIEW.id), b"{not json")
    assert await UserViewCache(store).get(VIEW.id) is None
    await store.set(UserViewCache.key(VIEW.id), b'{"id": "x", "created_at": "2026-01-01T00:00:00"}')
    assert await UserViewCache(store).get(VIEW.id) is None


async def test_an_unavailable_store_degrades_to_misses(
    clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = UserViewCache(DownStore(clock))
    assert await cache.get(VIEW.id) is None
    await cache.fill(VIEW)
    await cache.refresh(VIEW)
    await cache.discard(VIEW.id)
    assert [r.getMessage() for r in caplog.records].count("user_view_cache_write_failed") == 2
