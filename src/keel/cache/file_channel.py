"""``FileInvalidations``: a near cache for the workers of one machine, kept honest by one counter.

Every worker of a machine reads the same state file (``LocalStore``), so a
change written there is seen by the next read anywhere. A read costs a SQLite
query, though, where a dict lookup would do. This channel lets each worker
keep a near cache anyway: a small file beside the state file holds a 64-bit
counter, mapped into every worker's memory. A writer moves it on (under an
exclusive ``flock``) after it has written a change through; a reader compares
it with the value it last saw before trusting its near cache, which costs a
memory read, and drops everything when it moved.

So a change is seen by every worker's next request after the writer's
``publish``, which the writer does before it answers: the same bound as
without a near cache. Nothing can lag or go down here; an unusable file
(``OSError``) makes the channel unusable and every read goes to the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
from pathlib import Path
from typing import Final

from keel.cache.invalidation import Fanout, InvalidationHandler

__all__ = ["FileInvalidations"]

_SIZE: Final = 8
_COUNTER: Final = struct.Struct("<Q")


class FileInvalidations:
    """``Invalidations`` through a shared counter file; nothing runs in the background."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._fanout = Fanout()
        self._map: mmap.mmap | None = None
        self._fd: int | None = None
        self._pid = os.getpid()
        self._last: int | None = None
        self._broken = False

    def __repr__(self) -> str:
        return f"FileInvalidations(path={str(self._path)!r})"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def usable(self) -> bool:
        self.sync()
        return not self._broken

    @property
    def near(self) -> bool:
        return True

    @property
    def epoch(self) -> int:
        return 0

    @property
    def stamp(self) -> int:
        self.sync()
        return self._fanout.stamp

    def on_invalidate(self, handler: InvalidationHandler) -> None:
        self._fanout.add(handler)

    def sync(self) -> None:
        """Drop every near entry if another worker published since this one last looked."""
        counter = self._read()
        if counter is None:
            return
        if counter != self._last:
            self._last = counter
            self._invalidate(None)

    async def publish(self, scope: str) -> None:
        """Move the counter on: every worker's next read drops its near cache."""
        mapped, fd = self._open()
        if mapped is None or fd is None:
            self._invalidate(None)
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            (current,) = _COUNTER.unpack_from(mapped, 0)
            _COUNTER.pack_into(mapped, 0, current + 1)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        if current != self._last:
            self._invalidate(None)  # someone else published since this worker last looked
        self._last = current + 1
        self._invalidate(scope)

    def write_failed(self) -> None:
        """Nothing to move on: every worker reads the one file, which the writer could not."""

    async def advance_epoch(self) -> None:
        """Nothing to move on: every worker reads the one file, with no epoch in its keys."""

    async def run(self) -> None:
        """Nothing to listen to."""

    def close(self) -> None:
        """Unmap the counter (this process only)."""
        mapped, self._map = self._map, None
        fd, self._fd = self._fd, None
        if mapped is not None:
            mapped.close()
        if fd is not None:
            os.close(fd)

    # -- internals ---------------------------------------------------------------------------

    def _invalidate(self, scope: str | None) -> None:
        self._fanout(scope)

    def _read(self) -> int | None:
        mapped, _ = self._open()
        if mapped is None:
            return None
        value: int = _COUNTER.unpack_from(mapped, 0)[0]
        return value

    def _open(self) -> tuple[mmap.mmap | None, int | None]:
        if self._pid != os.getpid():
            # Inherited over a fork: the mapping still works, but keep nothing of the parent's.
            self._map, self._fd, self._pid, self._last = None, None, os.getpid(), None
        if self._map is not None:
            return self._map, self._fd
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    if os.fstat(fd).st_size < _SIZE:
                        os.ftruncate(fd, _SIZE)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                mapped = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            except BaseException:
                os.close(fd)
                raise
        except OSError:
            if not self._broken:
                self._broken = True
                self._invalidate(None)
            return None, None
        self._broken = False
        self._map, self._fd = mapped, fd
        with contextlib.suppress(ValueError):
            self._last = _COUNTER.unpack_from(mapped, 0)[0]
        return mapped, fd
