"""``LocalStore``: one cache for every process of a machine, in a SQLite file.

Without Redis, keel's workers are processes of one machine. The security state
kept in the cache (failure counters, lockouts, known sources, rate-limit
windows, cached subject state) must be the same for all of them, so it lives in
one SQLite file in WAL mode that every process opens (statements, schema and
checks: ``keel.cache._local_file``).

Where the calls run was chosen from ``bench/local_store.py`` (ranges over three
runs on a busy 2-core machine; ratios of medians against ``MemoryStore``, which
does no I/O at all):

* Reads run on the event loop. A WAL reader never waits for a writer: a
  ``get_many`` of 3 keys costs 25-30x a ``MemoryStore`` one, with or without
  another process writing the file. Through a thread it costs 135-320x: the
  hop is 5-10x the read itself, and reads are on every authenticated request.
  The read connection has no busy handler; in the rare case where a WAL reader
  would have to wait (another process recovering the file), the read is
  retried on the thread instead of waiting on the loop.
* Writes run on one thread per process, each in a ``BEGIN IMMEDIATE``
  transaction. On the loop a write costs less (20-35x against 60-195x through
  the thread), but it blocks the loop for as long as it takes, and that has a
  long tail: 1-8% of on-loop writes blocked the loop for over 1 ms (p99 4-10
  ms, worst cases 15-250 ms: waiting for another process's lock, WAL
  checkpoints), where no ``MemoryStore`` call did. Writes come with logins and
  cache misses, not with every request, so the hop is paid where it matters
  least.

A locked file is retried with short pauses (from 0.1 ms, doubling up to 5 ms;
SQLite's own busy handler sleeps 1, 2, 5... ms at a time while another process
holds the lock for tens of microseconds) until ``timeout`` seconds after the
call, time queued behind the process's other writes included; then the call
raises ``CacheUnavailable``. A call cancelled while its write is queued or
running may still be applied, as with Redis.

Expiry is wall-clock time (``clock.now()``) in whole microseconds: the file
outlives processes, and monotonic clocks are not comparable across them. A
wall clock stepped backwards makes entries live longer by the step.

Nothing is evicted: at ``max_entries`` live keys a write of a new key raises
``CacheFull``; writes to existing keys and deletes still work.

A file at the path that is not this store's (not SQLite, another
application's database, another schema version) is never changed, converted
or deleted: every call raises ``CacheUnavailable`` naming the path until an
operator removes it or configures another path. A future schema change must
therefore come with a new file name, so that two keel versions never share one.
A damaged file is not checked as a whole at opening (that would read all of
it): the calls that reach the damage raise ``CacheUnavailable`` naming the
path, and the file is not repaired or deleted either.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, TypeAlias, TypeVar

from keel._clock import Clock
from keel.cache._local_file import CacheFile, is_busy, transaction
from keel.cache.store import CacheStatus, validate_ttl, validate_versioned
from keel.errors import CacheFull, CacheUnavailable

__all__ = ["LocalStore"]

_T = TypeVar("_T")
# One step on the file: given a connection and the time in microseconds since the epoch.
_Op: TypeAlias = Callable[[sqlite3.Connection, int], _T]

_FIRST_PAUSE: Final = 0.0001
_LONGEST_PAUSE: Final = 0.005
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

# Connections and threads inherited over a fork belong to the parent: the child keeps
# them referenced so that they are never finalised (closing one would drop the parent's
# locks and could checkpoint or remove the WAL under it), and opens its own.
_INHERITED: list[object] = []


class LocalStore:
    """A ``Store`` in the SQLite file ``path``, shared by every process that opens it.

    Constructing it opens nothing: the file (mode 0600; its directory is created
    with mode 0700 if missing) is created and checked on first use, and each
    process opens its own connections, again after a fork. A call that finds
    the file locked by another process raises ``CacheUnavailable`` after
    ``timeout`` seconds at most; so does every call while the file cannot be
    used, and ``status`` is then ``"degraded"``. At ``max_entries`` live keys a
    new key raises ``CacheFull``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Clock,
        *,
        max_entries: int = 1_000_000,
        timeout: float = 1.0,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError("timeout must be a positive number of seconds")
        self._file = CacheFile(Path(path), max_entries)
        self._clock = clock
        self._timeout = timeout
        self._pid = os.getpid()
        self._reader: sqlite3.Connection | None = None
        self._writer: _Writer | None = None
        self._status: CacheStatus = "ok"

    def __repr__(self) -> str:
        return f"LocalStore(path={str(self.path)!r}, max_entries={self._file.max_entries})"

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._file.path

    @property
    def status(self) -> CacheStatus:
        """``"degraded"`` when the last call could not use the file, else ``"ok"``."""
        return self._status

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None`` when absent or expired."""
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under ``keys``, in order; ``None`` for each absent or expired one."""
        if not keys:
            return []
        return await self._read(lambda conn, now: self._file.get_many(conn, keys, now))

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any value and any previous expiry."""
        validate_ttl(ttl)
        await self._write(lambda conn, now: self._file.set(conn, now, key, value, _at(now, ttl)))

    async def add(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent; ``True`` when this call stored it."""
        validate_ttl(ttl)
        return await self._write(
            lambda conn, now: self._file.add(conn, now, key, value, _at(now, ttl))
        )

    async def set_if_newer(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store the versioned ``value`` unless ``key`` holds one at least as new."""
        validate_ttl(ttl)
        validate_versioned(value)
        return await self._write(
            lambda conn, now: self._file.set_if_newer(conn, now, key, value, _at(now, ttl))
        )

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        await self._write(lambda conn, _now: self._file.delete(conn, key))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add ``amount`` to the counter under ``key``; ``ttl`` applies only on creation."""
        validate_ttl(ttl)
        return await self._write(
            lambda conn, now: self._file.incr(conn, now, key, amount, _at(now, ttl))
        )

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when absent or without expiry."""

        def remaining(conn: sqlite3.Connection, now: int) -> float | None:
            expires_at = self._file.expires_at(conn, key, now)
            return None if expires_at is None else (expires_at - now) / 1_000_000

        return await self._read(remaining)

    async def ping(self) -> None:
        """Return when the file opens and answers; raise ``CacheUnavailable`` otherwise."""
        await self._read(lambda conn, _now: self._file.count(conn))

    async def close(self) -> None:
        """Close this process's connections and thread. Safe to call more than once."""
        self._adopt_process()
        reader, self._reader = self._reader, None
        writer, self._writer = self._writer, None
        if reader is not None:
            reader.close()
        if writer is not None:
            try:
                # On its thread, after any write still queued there.
                await asyncio.get_running_loop().run_in_executor(writer.executor, writer.close)
            finally:
                writer.executor.shutdown(wait=False)

    def _now(self) -> int:
        return (self._clock.now() - _EPOCH) // _MICROSECOND

    async def _read(self, op: _Op[_T]) -> _T:
        now = self._now()
        reader = await self._reader_connection()
        try:
            result = op(reader, now)
        except sqlite3.Error as exc:
            if not is_busy(exc):
                raise self._failed(exc) from exc
            # Never wait on the event loop: a read that would have to wait runs on the thread.
            return await self._on_thread(op, now, write=False)
        self._status = "ok"
        return result

    async def _write(self, op: _Op[_T]) -> _T:
        return await self._on_thread(op, self._now(), write=True)

    async def _reader_connection(self) -> sqlite3.Connection:
        self._adopt_process()
        if self._reader is None:
            # Creating and checking the file may wait for another process: on the thread.
            await self._on_thread(lambda _conn, _now: None, 0, write=False)
            if self._reader is None:  # another call may have opened it meanwhile
                try:
                    self._reader = self._file.open_reader()
                except sqlite3.Error as exc:
                    raise self._failed(exc) from exc
        return self._reader

    async def _on_thread(self, op: _Op[_T], now: int, *, write: bool) -> _T:
        self._adopt_process()
        if self._writer is None:
            self._writer = _Writer(self._file)
        writer = self._writer
        # Real time, like a socket timeout: it bounds how long the caller waits for a lock.
        deadline = time.monotonic() + self._timeout
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                writer.executor, writer.run, op, now, deadline, write
            )
        except CacheFull:
            raise
        except CacheUnavailable:
            self._status = "degraded"
            raise
        except (sqlite3.Error, OSError) as exc:
            raise self._failed(exc) from exc
        self._status = "ok"
        return result

    def _failed(self, exc: sqlite3.Error | OSError) -> CacheUnavailable:
        self._status = "degraded"
        if isinstance(exc, sqlite3.Error) and is_busy(exc):
            return CacheUnavailable(
                f"the local cache {self.path} stayed locked by another process for {self._timeout}s"
            )
        # The file may be replaced or repaired meanwhile: open it afresh next time.
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        return CacheUnavailable(f"the local cache {self.path} cannot be used: {exc}")

    def _adopt_process(self) -> None:
        pid = os.getpid()
        if pid != self._pid:
            _INHERITED.extend(held for held in (self._reader, self._writer) if held is not None)
            self._reader = None
            self._writer = None
            self._pid = pid


class _Writer:
    """This process's one thread for writes, and the connection used only there."""

    def __init__(self, file: CacheFile) -> None:
        self._file = file
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-cache-local")
        self._conn: sqlite3.Connection | None = None

    def run(self, op: _Op[_T], now: int, deadline: float, write: bool) -> _T:
        """Run ``op``, in one transaction if ``write``, retrying while locked until ``deadline``."""
        pause = _FIRST_PAUSE
        while True:
            try:
                if self._conn is None:
                    self._conn = self._file.open_writer()
                if not write:
                    return op(self._conn, now)
                with transaction(self._conn):
                    return op(self._conn, now)
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    self.close()  # open and check the file afresh next time
                    raise
                if time.monotonic() + pause > deadline:
                    raise
            # Not SQLite's busy handler, which sleeps 1, 2, 5... ms at a time: another
            # process holds the lock for tens of microseconds, so start far shorter.
            time.sleep(pause)
            pause = min(2 * pause, _LONGEST_PAUSE)

    def close(self) -> None:
        """Close the connection (on the thread that opened it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _at(now: int, ttl: float | None) -> int | None:
    # Whole microseconds, at least one, so that a tiny ttl still expires.
    return None if ttl is None else now + max(1, round(ttl * 1_000_000))
