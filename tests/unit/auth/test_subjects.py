"""Subject state in the cache store: write-through publish, read-through fill, short TTLs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from keel._clock import FrozenClock
from keel.auth import (
    DEFAULT_STATE_TTL,
    UNKNOWN_STATE_TTL,
    SubjectState,
    cached_subject_state,
    forget_subject,
    publish_subject_state,
    subject_key,
)
from keel.cache import MemoryStore, Store
from tests.unit.auth._support import Directory, active


async def test_a_miss_loads_once_then_the_cache_answers(store: Store, directory: Directory) -> None:
    first = await cached_subject_state(store, "user-1", directory.load)
    assert first == active("user")
    assert directory.loads == 1
    for _ in range(5):
        assert await cached_subject_state(store, "user-1", directory.load) == first
    assert directory.loads == 1
    remaining = await store.ttl(subject_key("user-1"))
    assert remaining is not None
    assert 0 < remaining <= DEFAULT_STATE_TTL


async def test_publish_is_seen_without_loading(store: Store, directory: Directory) -> None:
    disabled = SubjectState(
        active=False,
        tokens_valid_after=datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC),
        scopes=frozenset({"user", "billing:read"}),
    )
    await publish_subject_state(store, "user-1", disabled)
    assert await cached_subject_state(store, "user-1", directory.load) == disabled
    assert directory.loads == 0


async def test_publish_replaces_a_cached_state(store: Store, directory: Directory) -> None:
    await cached_subject_state(store, "admin-1", directory.load)
    demoted = active("user")
    await publish_subject_state(store, "admin-1", demoted)
    assert await cached_subject_state(store, "admin-1", directory.load) == demoted
    assert directory.loads == 1


async def test_publishing_none_says_the_subject_is_gone(store: Store, directory: Directory) -> None:
    await cached_subject_state(store, "user-1", directory.load)
    del directory.states["user-1"]  # deleted and committed...
    await publish_subject_state(store, "user-1", None)  # ...and published
    assert await cached_subject_state(store, "user-1", directory.load) is None
    assert directory.loads == 1
    remaining = await store.ttl(subject_key("user-1"))
    assert remaining is not None
    assert UNKNOWN_STATE_TTL < remaining <= DEFAULT_STATE_TTL  # authoritative, not a guess


async def test_forget_makes_the_next_read_load_again(store: Store, directory: Directory) -> None:
    await cached_subject_state(store, "user-1", directory.load)
    directory.states["user-1"] = active()
    await forget_subject(store, "user-1")
    assert await cached_subject_state(store, "user-1", directory.load) == active()
    assert directory.loads == 2


async def test_unknown_subjects_are_cached_briefly(store: Store, directory: Directory) -> None:
    assert await cached_subject_state(store, "ghost", directory.load) is None
    assert await cached_subject_state(store, "ghost", directory.load) is None
    assert directory.loads == 1
    remaining = await store.ttl(subject_key("ghost"))
    assert remaining is not None
    assert 0 < remaining <= UNKNOWN_STATE_TTL


async def test_a_fill_never_overwrites_a_publish_that_raced_it(store: Store) -> None:
    """The loader read the old row; the change committed and was published meanwhile."""
    published = SubjectState(active=False, tokens_valid_after=datetime.now(UTC), scopes=frozenset())

    async def slow_loader(subject_id: str) -> SubjectState:
        stale = active("user", "admin")
        await publish_subject_state(store, subject_id, published)  # lands while we "query"
        return stale

    # This request answers with what it read...
    assert await cached_subject_state(store, "user-1", slow_loader) == active("user", "admin")
    # ...but the cache keeps the newer, published state for everyone after it.
    assert await cached_subject_state(store, "user-1", slow_loader) == published


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"v": 2, "known": true}',
        b'{"v": 1}',
        b'{"v": 1, "known": true, "active": "yes", "valid_after": 0, "scopes": []}',
        b'{"v": 1, "known": true, "active": true, "valid_after": "0", "scopes": []}',
        b'{"v": 1, "known": true, "active": true, "valid_after": true, "scopes": []}',
        b'{"v": 1, "known": true, "active": true, "valid_after": 1e300, "scopes": []}',
        b'{"v": 1, "known": true, "active": true, "valid_after": 0, "scopes": "admin"}',
        b'{"v": 1, "known": true, "active": true, "valid_after": 0, "scopes": [1]}',
        b'{"v": 1, "known": true, "active": true, "valid_after": NaN, "scopes": []}',
        b"[" * 100_000,
    ],
)
async def test_an_unreadable_entry_is_a_miss_and_is_replaced(
    store: Store, directory: Directory, raw: bytes
) -> None:
    await store.set(subject_key("user-1"), raw, ttl=60)
    assert await cached_subject_state(store, "user-1", directory.load) == active("user")
    assert directory.loads == 1
    stored = await store.get(subject_key("user-1"))
    assert stored is not None
    assert json.loads(stored)["known"] is True


async def test_entries_expire_so_a_lost_publish_heals(
    memory_store: MemoryStore, directory: Directory, clock: FrozenClock
) -> None:
    await cached_subject_state(memory_store, "user-1", directory.load, ttl=60)
    directory.states["user-1"] = SubjectState(
        active=False, tokens_valid_after=clock.now(), scopes=frozenset()
    )  # changed in the database; the publish never happened
    clock.advance(59)
    cached = await cached_subject_state(memory_store, "user-1", directory.load, ttl=60)
    assert cached is not None
    assert cached.active
    clock.advance(1)
    reloaded = await cached_subject_state(memory_store, "user-1", directory.load, ttl=60)
    assert reloaded is not None
    assert not reloaded.active
    assert directory.loads == 2


async def test_valid_after_survives_the_round_trip_to_the_microsecond(store: Store) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    other_zone = when.astimezone(timezone(timedelta(hours=2)))
    await publish_subject_state(store, "u", active(valid_after=other_zone))
    state = await cached_subject_state(store, "u", Directory().load)
    assert state is not None
    assert state.tokens_valid_after == when
    assert state.tokens_valid_after.tzinfo is not None


def test_subject_state_refuses_naive_times_and_mutable_scopes() -> None:
    with pytest.raises(ValueError, match="aware"):
        SubjectState(active=True, tokens_valid_after=datetime(2026, 1, 1), scopes=frozenset())  # noqa: DTZ001
    with pytest.raises(TypeError):
        SubjectState(
            active=True,
            tokens_valid_after=datetime.now(UTC),
            scopes={"admin"},  # type: ignore[arg-type]
        )
