"""LocalStore across processes: real interpreters (``_local_worker``) on one file, and fork."""

from __future__ import annotations

import asyncio
import os
import traceback
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from keel._clock import FrozenClock
from keel.cache import LocalStore
from keel.errors import CacheFull
from tests.unit.cache._local_worker import Worker, all_at_once, ask
from tests.unit.cache._revocation import revoke, still_revoked

MAX = 1_000_000
Spawn = Callable[..., Awaitable[list[Worker]]]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "keel.sqlite3"


@pytest.fixture
def spawn(path: Path, clock: FrozenClock) -> Iterator[Spawn]:
    """``await spawn(n)``: ``n`` worker processes on ``path``, started together and ready."""
    started: list[Worker] = []

    async def spawn(count: int, *, max_entries: int = MAX) -> list[Worker]:
        workers = [Worker(path, clock.now(), max_entries) for _ in range(count)]
        started.extend(workers)
        for worker in workers:
            await asyncio.to_thread(worker.wait_ready)
        return workers

    yield spawn
    for worker in started:
        worker.stop()


@pytest.fixture
async def store(path: Path, clock: FrozenClock) -> AsyncIterator[LocalStore]:
    local = LocalStore(path, clock)
    try:
        yield local
    finally:
        await local.close()


async def test_processes_incrementing_one_key_lose_no_update(
    store: LocalStore, spawn: Spawn
) -> None:
    processes, each = 3, 300
    workers = await spawn(processes)
    answers = await all_at_once(workers, "incr", "hits", each)
    seen = sorted(value for answer in answers for value in answer)  # type: ignore[attr-defined]
    # Every increment got its own result: none was lost or applied to a stale value.
    assert seen == list(range(1, processes * each + 1))
    assert await store.get("hits") == b"%d" % (processes * each)
    # The window started with the first increment and no later one moved it.
    assert await store.ttl("hits") == 60


async def test_processes_racing_add_have_exactly_one_winner(
    store: LocalStore, spawn: Spawn
) -> None:
    workers, keys = await spawn(4), 300
    # Every worker adds once:0, once:1... in the same order, so they collide key by key.
    answers = await asyncio.gather(
        *(ask(worker, "add", "once:", keys, f"w{n}") for n, worker in enumerate(workers))
    )
    for i in range(keys):
        won = [n for n, answer in enumerate(answers) if answer[i]]  # type: ignore[index]
        assert len(won) == 1, f"once:{i} was won by {won}"
        assert await store.get(f"once:{i}") == f"w{won[0]}".encode()
    assert await store.add("once:0", b"parent", ttl=60) is False


async def test_a_write_is_seen_by_every_process_at_once(store: LocalStore, spawn: Spawn) -> None:
    [worker] = await spawn(1)
    # Both processes have their read connections open before any of these writes.
    assert await store.get("from-worker") is None
    assert await ask(worker, "get", "from-parent") == [None, None]
    await store.set("from-parent", b"p")
    assert await ask(worker, "get", "from-parent") == ["p", None]
    await ask(worker, "set", "from-worker", "w")
    assert await store.get("from-worker") == b"w"
    await store.delete("from-parent")
    assert await ask(worker, "get", "from-parent") == [None, None]


async def test_expiry_is_the_same_for_every_process(
    store: LocalStore, spawn: Spawn, clock: FrozenClock
) -> None:
    [worker] = await spawn(1)  # its clock starts where this one is
    await store.set("k", b"v", ttl=10)
    await ask(worker, "advance", 9.5)
    assert await ask(worker, "get", "k") == ["v", 0.5]
    await ask(worker, "advance", 0.5)
    assert await ask(worker, "get", "k") == [None, None]
    clock.advance(9.5)
    assert await store.ttl("k") == 0.5
    clock.advance(0.5)
    assert await store.get("k") is None


def test_a_store_used_before_fork_opens_its_own_connections_in_the_child(
    path: Path, clock: FrozenClock
) -> None:
    store = LocalStore(path, clock)

    async def before() -> None:
        await store.set("k", b"parent")
        assert await store.get("k") == b"parent"
        assert await store.incr("n") == 1

    asyncio.run(before())
    reader, writer = store._reader, store._writer
    assert reader is not None
    assert writer is not None
    with warnings.catch_warnings():
        # Python 3.12+ warns when a process with threads (the store's writer) forks;
        # the child never uses the parent's thread, which is the point of this test.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: reports through its exit code, never returns into pytest

        async def in_child() -> None:
            assert await store.get("k") == b"parent"
            await store.set("k", b"child")
            assert await store.incr("n") == 2
            assert store._reader is not reader
            assert store._writer is not writer
            await store.close()

        try:
            asyncio.run(in_child())
        except BaseException:  # noqa: BLE001 - whatever it is, report it and exit
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    async def after() -> None:
        # The child neither closed nor used the parent's connections: they still work.
        assert await store.get("k") == b"child"
        assert store._reader is reader
        assert await store.incr("n") == 3
        assert store._writer is writer
        await store.close()

    asyncio.run(after())


async def test_sec_36_a_revocation_outlives_100000_writes_to_the_local_file(
    path: Path, clock: FrozenClock, spawn: Spawn
) -> None:
    bound = 100_002
    store = LocalStore(path, clock, max_entries=bound)
    try:
        await revoke(store, "victim", "victim-sid")
        # The writes come from two other processes, as a flood spread over workers would.
        workers = await spawn(2, max_entries=bound)
        for prefix, worker in zip(("a:", "b:"), workers, strict=True):
            worker.send("fill", prefix, 50_000)  # both fill at the same time
        answers = [await asyncio.to_thread(worker.receive) for worker in workers]
        assert answers == [[50_000, 0], [50_000, 0]]
        assert await still_revoked(store, "victim", "victim-sid")
        # At the bound a new key is refused, in every process, and nothing is dropped.
        with pytest.raises(CacheFull):
            await store.set("one-more", b"v")
        assert await ask(workers[0], "fill", "c:", 10) == [0, 10]
        assert await store.get_many(["a:0", "b:49999"]) == [b"other", b"other"]
        assert await still_revoked(store, "victim", "victim-sid")
    finally:
        await store.close()
