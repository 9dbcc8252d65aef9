"""SecurityState: records and session states from the nearest safe tier, never staler than allowed.

The shared store here is process memory or the real Redis; the channel is
either keel's ``LocalInvalidations`` (every worker reads the store directly)
or ``Channel``, an in-test ``Invalidations`` whose usability and epoch the
test sets, so the near cache's rules can be driven step by step. The Redis
channel itself is tested against real servers in tests/unit/cache.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest

from keel._clock import FrozenClock
from keel.auth import (
    UNKNOWN_STATE_TTL,
    UNKNOWN_SUBJECT,
    SecurityState,
    SubjectRecord,
    SubjectState,
)
from keel.auth.subjects import UnreadableRecord, decode_record, encode_record
from keel.cache import InvalidationHandler, LocalInvalidations, MemoryStore, Store
from keel.cache.store import split_versioned, versioned
from keel.errors import CacheUnavailable
from tests.unit.auth._support import Directory, active

SUBJECT_KEY = "sec:e{epoch}:{{user-1}}:s"
SESSION_KEY = "sec:e{epoch}:{{user-1}}:sid:{sid}"


class Channel:
    """An ``Invalidations`` the test drives: usable or not, an epoch, messages heard at once."""

    def __init__(self) -> None:
        self.usable = True
        self.near = True
        self.epoch = 1
        self.stamp = 0
        self.published: list[str] = []
        self.failed_writes = 0
        self.advances = 0
        self.advance_fails = False
        self._handlers: list[InvalidationHandler] = []

    def on_invalidate(self, handler: InvalidationHandler) -> None:
        self._handlers.append(handler)

    def hear(self, scope: str | None) -> None:
        """A message from another worker arrives."""
        self.stamp += 1
        for handler in self._handlers:
            handler(scope)

    async def publish(self, scope: str) -> None:
        self.published.append(scope)
        self.hear(scope)

    def write_failed(self) -> None:
        self.failed_writes += 1

    async def advance_epoch(self) -> None:
        if self.advance_fails:
            raise CacheUnavailable("Redis did not answer")
        self.advances += 1
        self.epoch += 1
        self.hear(None)

    async def run(self) -> None:
        """Nothing to listen to."""


class DownStore(MemoryStore):
    """Every call fails the way an unreachable Redis does."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise CacheUnavailable("Redis did not answer")

    async def set_if_newer(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        raise CacheUnavailable("Redis did not answer")


class ReadCountingStore(MemoryStore):
    """Counts the reads that reach the shared tier."""

    reads = 0

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.reads += 1
        return await super().get_many(keys)


def _state(store: Store, directory: Directory, channel: Channel | None = None) -> SecurityState:
    return SecurityState(
        store,
        channel if channel is not None else LocalInvalidations(),
        load_subject=directory.load,
        load_session=directory.session,
    )


# -- the record codec ----------------------------------------------------------------------------


def test_a_record_survives_the_round_trip_to_the_microsecond() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    record = SubjectRecord(
        7,
        active("user", "admin", valid_after=when.astimezone(timezone(timedelta(hours=2)))),
        b'{"email":"\xc3\xa9@example.com"}',
    )
    decoded = decode_record(encode_record(record))
    assert decoded == record
    assert decoded.state is not None
    assert decoded.state.tokens_valid_after == when
    assert decode_record(encode_record(UNKNOWN_SUBJECT)) == UNKNOWN_SUBJECT


@pytest.mark.parametrize(
    "raw",
    [
        b"not versioned",
        versioned(1, b"not json"),
        versioned(1, b"[]"),
        versioned(1, b'{"known": true}'),
        versioned(1, b'{"known": true, "active": "yes", "valid_after": 0, "scopes": []}'),
        versioned(1, b'{"known": true, "active": true, "valid_after": "0", "scopes": []}'),
        versioned(1, b'{"known": true, "active": true, "valid_after": true, "scopes": []}'),
        versioned(1, b'{"known": true, "active": true, "valid_after": 1e300, "scopes": []}'),
        versioned(1, b'{"known": true, "active": true, "valid_after": 0, "scopes": "admin"}'),
        versioned(1, b'{"known": true, "active": true, "valid_after": 0, "scopes": [1]}'),
        versioned(1, b'{"known": true, "active": true, "valid_after": NaN, "scopes": []}'),
        versioned(
            1, b'{"known": true, "active": true, "valid_after": 0, "scopes": [], "profile": 1}'
        ),
        versioned(1, b"[" * 100_000),
    ],
)
def test_an_unreadable_record_is_refused(raw: bytes) -> None:
    with pytest.raises(UnreadableRecord):
        decode_record(raw)


def test_subject_state_refuses_naive_times_and_mutable_scopes() -> None:
    with pytest.raises(ValueError, match="aware"):
        SubjectState(active=True, tokens_valid_after=datetime(2026, 1, 1), scopes=frozenset())  # noqa: DTZ001
    with pytest.raises(TypeError):
        SubjectState(
            active=True,
            tokens_valid_after=datetime.now(UTC),
            scopes={"admin"},  # type: ignore[arg-type]
        )


# -- the shared tier -----------------------------------------------------------------------------


async def test_a_miss_loads_once_then_the_store_answers(store: Store, directory: Directory) -> None:
    state = _state(store, directory)
    for _ in range(3):
        record, live = await state.check("user-1", "sid-1")
        assert record.state == active("user")
        assert live
    assert (directory.loads, directory.session_loads) == (1, 1)


async def test_a_fill_never_replaces_a_newer_write(store: Store, directory: Directory) -> None:
    """The reader loaded the old row; the change committed and was written through meanwhile."""
    state = _state(store, directory)
    disabled = SubjectState(False, datetime.now(UTC), frozenset())
    real_load = directory.load

    async def slow_load(subject_id: str) -> SubjectRecord:
        stale = await real_load(subject_id)
        directory.change(subject_id, disabled)  # the change commits...
        await state.subject_changed(subject_id)  # ...and is written through, mid-read
        return stale

    racing = SecurityState(
        store, LocalInvalidations(), load_subject=slow_load, load_session=directory.session
    )
    # This request answers with what it read...
    record, _ = await racing.check("user-1", "sid-1")
    assert record.state == active("user")
    # ...but the store keeps the newer version for everyone after it.
    record, _ = await state.check("user-1", "sid-1")
    assert record.state == disabled


async def test_writers_racing_end_with_the_newest_version(
    store: Store, directory: Directory
) -> None:
    state = _state(store, directory)
    records = [SubjectRecord(v, active(f"role{v}")) for v in (3, 9, 5, 1, 8)]
    key = SUBJECT_KEY.format(epoch=0)
    await asyncio.gather(*(store.set_if_newer(key, encode_record(r), ttl=60) for r in records))
    record, _ = await state.check("user-1", "sid-1")
    assert record.version == 9
    assert directory.loads == 0


async def test_a_revoked_session_is_never_filled_back_to_live(
    store: Store, directory: Directory
) -> None:
    state = _state(store, directory)
    key = SESSION_KEY.format(epoch=0, sid="sid-1")

    async def stale_session(subject_id: str, session_id: str) -> bool:
        directory.ended.add(session_id)  # the logout commits while we "query"...
        await state.sessions_ended(subject_id, [session_id])  # ...and is written through
        return True  # what this reader saw before it

    racing = SecurityState(
        store, LocalInvalidations(), load_subject=directory.load, load_session=stale_session
    )
    assert (await racing.check("user-1", "sid-1"))[1] is True  # what it read, this once
    assert split_versioned(await store.get(key) or b"") == (1, b"0")
    assert (await state.check("user-1", "sid-1"))[1] is False
    # A revoked entry lasts as long as an access token of the session can verify.
    ttl = await store.ttl(key)
    assert ttl is not None
    assert ttl > 900


async def test_unknown_subjects_are_cached_briefly(store: Store, directory: Directory) -> None:
    state = _state(store, directory)
    record = await state.record("ghost")
    assert record == UNKNOWN_SUBJECT
    key = "sec:e0:{ghost}:s"
    remaining = await store.ttl(key)
    assert remaining is not None
    assert 0 < remaining <= UNKNOWN_STATE_TTL


async def test_entries_expire_so_a_lost_write_through_heals(
    memory_store: MemoryStore, directory: Directory, clock: FrozenClock
) -> None:
    state = _state(memory_store, directory)
    await state.check("user-1", "sid-1")
    # Changed in the database; the write-through never happened (a crash in between).
    directory.change("user-1", SubjectState(False, clock.now(), frozenset()))
    clock.advance(59)
    assert (await state.record("user-1")).state == active("user")
    clock.advance(1)
    reloaded = (await state.record("user-1")).state
    assert reloaded is not None
    assert not reloaded.active
    assert directory.loads == 2


async def test_an_unreadable_entry_is_reloaded(store: Store, directory: Directory) -> None:
    state = _state(store, directory)
    key = SUBJECT_KEY.format(epoch=0)
    await store.set(key, versioned(1, b"{broken"), ttl=60)
    assert (await state.record("user-1")).state == active("user")
    assert directory.loads == 1
    assert json.loads(split_versioned(await store.get(key) or b"")[1])["known"] is True


async def test_concurrent_misses_share_one_load(store: Store, directory: Directory) -> None:
    state = _state(DownStore(FrozenClock()), directory)
    gate = asyncio.Event()
    real_load = directory.load

    async def slow_load(subject_id: str) -> SubjectRecord:
        await gate.wait()
        return await real_load(subject_id)

    shared = SecurityState(
        state._store,
        LocalInvalidations(),
        load_subject=slow_load,
        load_session=directory.session,
    )
    waiting = [asyncio.ensure_future(shared.record("user-1")) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    records = await asyncio.gather(*waiting)
    assert {r.version for r in records} == {1}
    assert directory.loads == 1


# -- the near cache and its channel ----------------------------------------------------------------


async def test_the_near_cache_answers_without_io_while_the_channel_is_usable(
    memory_store: MemoryStore, directory: Directory
) -> None:
    channel = Channel()
    state = _state(memory_store, directory, channel)
    await state.check("user-1", "sid-1")
    await memory_store.close()  # the shared tier is gone: only the near cache can answer
    for _ in range(5):
        record, live = await state.check("user-1", "sid-1")
        assert record.state == active("user")
        assert live
    assert (directory.loads, directory.session_loads) == (1, 1)


async def test_sec_36_a_change_heard_on_the_channel_is_refused_on_the_next_request(
    memory_store: MemoryStore, directory: Directory
) -> None:
    here, there = Channel(), Channel()
    mine = _state(memory_store, directory, here)
    other = _state(memory_store, directory, there)  # another worker, same shared store
    await other.check("user-1", "sid-1")
    directory.change("user-1", SubjectState(False, datetime.now(UTC), frozenset()))
    await mine.subject_changed("user-1")
    assert here.published == ["user-1"]
    there.hear("user-1")  # the message reaches the other worker
    record, _ = await other.check("user-1", "sid-1")
    assert record.state is not None
    assert not record.state.active


async def test_the_worker_that_made_a_change_refuses_at_once(
    memory_store: MemoryStore, directory: Directory
) -> None:
    channel = Channel()
    state = _state(memory_store, directory, channel)
    await state.check("user-1", "sid-1")
    directory.ended.add("sid-1")
    await state.sessions_ended("user-1", ["sid-1"])
    assert (await state.check("user-1", "sid-1"))[1] is False


async def test_an_unusable_channel_sends_every_read_to_the_record(
    memory_store: MemoryStore, directory: Directory
) -> None:
    channel = Channel()
    state = _state(memory_store, directory, channel)
    await state.check("user-1", "sid-1")
    channel.usable = False  # down or lagging: neither the near cache nor the store is trusted
    directory.change("user-1", active("user", "admin"))  # a change nobody heard of
    for expected_loads in (2, 3):
        record, _ = await state.check("user-1", "sid-1")
        assert record.state == active("user", "admin")
        assert directory.loads == expected_loads


async def test_an_unreachable_store_sends_reads_to_the_record(directory: Directory) -> None:
    state = _state(DownStore(FrozenClock()), directory, Channel())
    record, live = await state.check("user-1", "sid-1")
    assert record.state == active("user")
    assert live
    assert (directory.loads, directory.session_loads) == (1, 1)


async def test_a_read_crossed_by_a_change_is_not_kept_near(directory: Directory) -> None:
    channel = Channel()
    store = ReadCountingStore(FrozenClock())
    real_load = directory.load
    crossings = [True]

    async def crossed(subject_id: str) -> SubjectRecord:
        record = await real_load(subject_id)
        if crossings.pop() if crossings else False:
            channel.hear(subject_id)  # a change to this subject is announced mid-read
        return record

    state = SecurityState(store, channel, load_subject=crossed, load_session=directory.session)
    await state.check("user-1", "sid-1")  # crossed: answered, but not kept near
    await state.check("user-1", "sid-1")  # so this one reads the store, and keeps it
    await state.check("user-1", "sid-1")  # and this one is answered near
    assert store.reads == 2


async def test_an_epoch_change_empties_the_near_cache_and_moves_the_keys(
    memory_store: MemoryStore, directory: Directory
) -> None:
    channel = Channel()
    state = _state(memory_store, directory, channel)
    await state.check("user-1", "sid-1")
    assert await memory_store.get(SUBJECT_KEY.format(epoch=1)) is not None
    channel.epoch = 2
    channel.hear(None)
    await state.check("user-1", "sid-1")
    assert directory.loads == 2  # nothing from epoch 1 was read again
    assert await memory_store.get(SUBJECT_KEY.format(epoch=2)) is not None


async def test_a_failed_write_through_asks_for_a_new_epoch(directory: Directory) -> None:
    channel = Channel()
    state = _state(DownStore(FrozenClock()), directory, channel)
    await state.subject_changed("user-1")
    await state.sessions_ended("user-1", ["sid-1"])
    assert channel.failed_writes == 2
    assert channel.published == []


async def test_writing_through_while_the_channel_is_unusable_moves_the_epoch_on_first(
    memory_store: MemoryStore, directory: Directory
) -> None:
    channel = Channel()
    state = _state(memory_store, directory, channel)
    assert (await state.check("user-1", "sid-1"))[1] is True  # live under epoch 1
    channel.usable = False
    directory.ended.add("sid-1")
    await state.sessions_ended("user-1", ["sid-1"])
    assert channel.advances == 1
    assert channel.epoch == 2
    assert channel.published == ["user-1"]
    assert channel.failed_writes == 0
    # The end was written under the new epoch, where every worker now reads.
    raw = await memory_store.get(SESSION_KEY.format(epoch=2, sid="sid-1"))
    assert raw is not None
    assert split_versioned(raw)[0] == 1
    channel.usable = True
    assert (await state.check("user-1", "sid-1"))[1] is False


async def test_an_epoch_that_cannot_be_moved_is_moved_once_the_store_answers(
    memory_store: MemoryStore, directory: Directory
) -> None:
    channel = Channel()
    channel.usable = False
    channel.advance_fails = True
    state = _state(memory_store, directory, channel)
    await state.subject_changed("user-1")
    assert channel.failed_writes == 1
    assert channel.published == []
