"""Whether a (stopped) process is inside a write transaction right now, on SQLite or PostgreSQL.

A test freezes a worker with SIGSTOP, asks, and SIGKILLs it only when the
answer is yes: a kill that lands mid-transaction for certain, not by luck.
Linux only (``/proc``).

- SQLite in WAL mode: the writer holds the WAL write lock, a POSIX lock on
  byte 120 of the ``-shm`` file, listed in ``/proc/locks`` under its pid.
- PostgreSQL: one of the process's connections has a backend in a transaction
  that has written (``backend_xid`` is set); the process's connections are
  found by their local ports (``/proc/PID/fd`` sockets, ``/proc/PID/net/tcp*``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

__all__ = ["WriteProbe"]

_WAL_WRITE_LOCK_OFFSET = 120  # WALINDEX_LOCK_OFFSET + WAL_WRITE_LOCK, SQLite's os_unix.c layout


class WriteProbe:
    """Asks whether a process is inside a write transaction on the database at ``url``.

    On PostgreSQL it keeps one connection of its own (on its own event loop), so
    a question costs one round trip while the process is frozen; ``close()`` it.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        parts = urlsplit(url)
        self._shm = Path(parts.path[1:] + "-shm") if parts.scheme.startswith("sqlite") else None
        self._pg_port = parts.port or 5432
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: asyncpg.Connection | None = None

    def writing(self, pid: int) -> bool:
        if self._shm is not None:
            return _holds_wal_write_lock(pid, self._shm)
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self._pg_writing(pid))

    def close(self) -> None:
        if self._loop is None:
            return
        if self._conn is not None:
            self._loop.run_until_complete(self._conn.close())
        self._loop.close()

    async def _pg_writing(self, pid: int) -> bool:
        ports = _local_ports(pid, self._pg_port)
        if not ports:
            return False
        if self._conn is None:
            self._conn = await asyncpg.connect(self._url)
        found = await self._conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND client_port = ANY($1::int[]) AND backend_xid IS NOT NULL",
            sorted(ports),
        )
        return bool(found)


def _holds_wal_write_lock(pid: int, shm: Path) -> bool:
    try:
        stat = shm.stat()
    except FileNotFoundError:
        return False
    for line in Path("/proc/locks").read_text().splitlines():
        # "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 120 120"
        fields = line.split()
        if len(fields) < 8 or fields[1] != "POSIX" or fields[3] != "WRITE":
            continue
        inode = int(fields[5].rsplit(":", 1)[1])
        if int(fields[4]) != pid or inode != stat.st_ino:
            continue
        start, end = int(fields[6]), fields[7]
        if start <= _WAL_WRITE_LOCK_OFFSET and (end == "EOF" or int(end) >= _WAL_WRITE_LOCK_OFFSET):
            return True
    return False


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _local_ports(pid: int, remote_port: int) -> set[int]:
    """The local ports of ``pid``'s TCP connections to ``remote_port``."""
    inodes = _socket_inodes(pid)
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
