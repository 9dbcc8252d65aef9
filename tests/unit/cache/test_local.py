"""LocalStore specifics: the bound, purging, a locked file, files that are not its own, modes.

The contract suite (test_contract.py) covers what every store shares; the tests
with several processes are in test_local_processes.py.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from keel._clock import FrozenClock
from keel.cache import CacheStatus, LocalStore, Store
from keel.cache._local_file import PURGE_PER_WRITE
from keel.errors import CacheFull, CacheUnavailable


def _status(store: Store) -> CacheStatus:
    # Through a call, so mypy does not narrow the property across awaits.
    return store.status


def _file_state(path: Path) -> tuple[bytes, int, list[str]]:
    """The bytes and mode of ``path``, and the names in its directory."""
    return path.read_bytes(), stat.S_IMODE(path.stat().st_mode), sorted(os.listdir(path.parent))


def _write_file(path: Path, content: bytes) -> None:
    path.parent.mkdir()
    path.write_bytes(content)
    path.chmod(0o644)


@contextmanager
def _write_lock_held_by_another_process(path: Path) -> Iterator[None]:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "conn.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.communicate(timeout=30)  # closing its stdin ends it and releases the lock


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "keel.sqlite3"


@pytest.fixture
async def store(path: Path, clock: FrozenClock) -> AsyncIterator[LocalStore]:
    local = LocalStore(path, clock)
    try:
        yield local
    finally:
        await local.close()


async def test_a_full_file_refuses_new_keys_and_keeps_the_rest(
    path: Path, clock: FrozenClock
) -> None:
    store = LocalStore(path, clock, max_entries=3)
    other = LocalStore(path, clock, max_entries=3)  # another worker on the same file
    try:
        await store.set("short", b"v", ttl=1)
        await store.set("a", b"v")
        await store.set("n", b"1")
        for write in (
            lambda: store.set("new", b"v"),
            lambda: store.add("new", b"v", ttl=None),
            lambda: store.incr("new"),
            lambda: other.set("new", b"v"),
        ):
            with pytest.raises(CacheFull) as caught:
                await write()
            assert caught.value.code == "cache_full"
            assert isinstance(caught.value, CacheUnavailable)
            assert str(path) in str(caught.value)
        # Full is not broken: status stays ok, and existing keys still take writes.
        assert _status(store) == "ok"
        await store.set("a", b"rewritten", ttl=60)
        assert await store.incr("n") == 2
        assert await store.add("a", b"x", ttl=None) is False
        assert await store.get_many(["a", "n", "new"]) == [b"rewritten", b"2", None]
        # An expired key makes room (purged by the write), and so does a delete.
        clock.advance(1)
        await other.set("new", b"v")
        with pytest.raises(CacheFull):
            await store.set("newer", b"v")
        await store.delete("a")
        await store.set("newer", b"v")
        assert await other.get_many(["short", "a", "new", "newer"]) == [None, None, b"v", b"v"]
    finally:
        await store.close()
        await other.close()


async def test_expired_rows_are_invisible_at_once_and_purged_a_few_per_write(
    store: LocalStore, path: Path, clock: FrozenClock
) -> None:
    for i in range(100):
        await store.set(f"short:{i}", b"v", ttl=1)
    clock.advance(1)
    assert await store.get_many([f"short:{i}" for i in range(100)]) == [None] * 100
    await store.set("one", b"v")
    with closing(sqlite3.connect(path)) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM entries").fetchone()
        (counted,) = conn.execute("SELECT entries FROM counts").fetchone()
    assert rows == counted == 100 - PURGE_PER_WRITE + 1


async def test_a_locked_file_fails_writes_in_bounded_time_without_blocking_the_loop(
    path: Path, clock: FrozenClock
) -> None:
    timeout = 0.3
    store = LocalStore(path, clock, timeout=timeout)
    try:
        await store.set("before", b"v")
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.002)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        with _write_lock_held_by_another_process(path):
            ticking = asyncio.create_task(ticker())
            started = time.perf_counter()
            # Six writes queue behind one another on the store's thread.
            results = await asyncio.gather(
                *(store.set(f"k{i}", b"v") for i in range(5)),
                store.incr("n"),
                return_exceptions=True,
            )
            elapsed = time.perf_counter() - started
            assert _status(store) == "degraded"
            # WAL: reads go on while another process holds the write lock.
            assert await store.get("before") == b"v"
            stop.set()
            await ticking
        for result in results:
            assert isinstance(result, CacheUnavailable)
            assert not isinstance(result, CacheFull)
            assert str(path) in str(result)
            assert "locked" in str(result)
        # Bounded by the timeout counted from each call, not once per queued write.
        assert timeout * 0.8 <= elapsed < timeout * 4
        assert max(gaps) < 0.1, "the event loop was blocked"
        await store.set("after", b"v")
        assert _status(store) == "ok"
        assert await store.get_many(["k0", "after"]) == [None, b"v"]
    finally:
        await store.close()


async def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(
    path: Path, clock: FrozenClock
) -> None:
    _write_file(path, b"these are somebody's notes, not a database\n" * 200)
    before = _file_state(path)
    store = LocalStore(path, clock)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.get("k"),
        lambda: store.set("k", b"v"),
        store.ping,
    ]
    for call in calls:
        with pytest.raises(CacheUnavailable) as caught:
            await call()
        assert str(path) in str(caught.value)
        assert "not a database" in str(caught.value)
    assert _status(store) == "degraded"
    await store.close()
    assert _file_state(path) == before  # same bytes, same mode, no -wal or -shm beside it
    assert before[2] == [path.name]


async def test_another_applications_database_is_refused_and_left_untouched(
    path: Path, clock: FrozenClock
) -> None:
    path.parent.mkdir()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('alice')")
        conn.commit()
    before = _file_state(path)
    store = LocalStore(path, clock)
    with pytest.raises(CacheUnavailable, match="not keel's local cache") as caught:
        await store.set("k", b"v")
    assert str(path) in str(caught.value)
    await store.close()
    assert _file_state(path) == before
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # not made WAL


async def test_another_schema_version_is_refused_and_left_untouched(
    path: Path, clock: FrozenClock
) -> None:
    first = LocalStore(path, clock)
    await first.set("k", b"v")
    await first.close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
    before = _file_state(path)
    store = LocalStore(path, clock)
    with pytest.raises(CacheUnavailable, match="schema version 99") as caught:
        await store.get("k")
    assert str(path) in str(caught.value)
    assert _status(store) == "degraded"
    await store.close()
    assert _file_state(path) == before
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM entries").fetchall() == [(b"v",)]


async def test_nothing_is_opened_before_first_use_and_the_files_are_private(
    tmp_path: Path, clock: FrozenClock
) -> None:
    path = tmp_path / "run" / "keel" / "cache.sqlite3"
    store = LocalStore(path, clock)
    await store.close()
    assert not (tmp_path / "run").exists()
    try:
        await store.set("k", b"v")
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for name in (path.name, path.name + "-wal", path.name + "-shm"):
            assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
    finally:
        await store.close()
    # Closed, then used again: it opens afresh, and the file kept its data.
    assert await store.get("k") == b"v"
    await store.close()


def test_bad_arguments_are_refused(path: Path, clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        LocalStore(path, clock, max_entries=0)
    with pytest.raises(ValueError, match="timeout"):
        LocalStore(path, clock, timeout=0)
