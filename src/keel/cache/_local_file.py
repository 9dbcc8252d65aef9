"""The SQLite file behind ``LocalStore``: its schema, its checks, and every statement on it.

All of the store's SQL lives here; ``keel.cache.local`` decides where and when
it runs. Times are whole microseconds since the epoch (``now``), so that every
process compares the same numbers; expired rows are invisible at once and go
``PURGE_PER_WRITE`` at a time, on writes, through an index on ``expires_at``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from keel.cache.store import incremented, is_newer
from keel.errors import CacheFull, CacheUnavailable

__all__ = [
    "APPLICATION_ID",
    "PURGE_PER_WRITE",
    "SCHEMA_VERSION",
    "CacheFile",
    "is_busy",
    "transaction",
]

APPLICATION_ID: Final = 0x6B65656C  # "keel", in the header's application_id field
SCHEMA_VERSION: Final = 1
PURGE_PER_WRITE: Final = 32
_CHUNK: Final = 500  # keys per SELECT ... IN, far below SQLite's parameter limit

# One statement per item: executescript would commit the caller's transaction.
_SCHEMA: Final = (
    "CREATE TABLE entries (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL,"
    " expires_at INTEGER) WITHOUT ROWID",
    "CREATE INDEX entries_expiry ON entries (expires_at) WHERE expires_at IS NOT NULL",
    # The number of rows, kept by triggers: counting a large table on every write would not do.
    "CREATE TABLE counts (id INTEGER PRIMARY KEY CHECK (id = 0), entries INTEGER NOT NULL)",
    "INSERT INTO counts VALUES (0, 0)",
    "CREATE TRIGGER entries_added AFTER INSERT ON entries"
    " BEGIN UPDATE counts SET entries = entries + 1; END",
    "CREATE TRIGGER entries_removed AFTER DELETE ON entries"
    " BEGIN UPDATE counts SET entries = entries - 1; END",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_IDENTITY: Final = "SELECT * FROM pragma_application_id, pragma_user_version"
_HAS_TABLES: Final = "SELECT 1 FROM sqlite_master LIMIT 1"
# WAL: readers never wait for the writer. synchronous=NORMAL: a commit does not fsync
# (only checkpoints do), so it costs what OFF would; a power cut may lose the last
# commits but never corrupts the file, which OFF could, and a corrupt file stops the
# cache until an operator steps in. Losing seconds is acceptable for a cache: the
# durable truth (accounts, sessions, revocations) lives in the database.
_WRITER_PRAGMAS: Final = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL")
_JOURNAL_MODE: Final = "PRAGMA journal_mode"
_READER_PRAGMAS: Final = ("PRAGMA query_only = ON",)
_BEGIN: Final = "BEGIN IMMEDIATE"  # takes the write lock first: no deadlock on upgrade
_COMMIT: Final = "COMMIT"
_ROLLBACK: Final = "ROLLBACK"
# A row whose expires_at has come is gone, whether or not it has been purged yet.
_SELECT_MANY: Final = (
    "SELECT key, value FROM entries"
    " WHERE key IN ({marks}) AND (expires_at IS NULL OR expires_at > ?)"
)
_SELECT_EXPIRY: Final = (
    "SELECT expires_at FROM entries WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
)
_SELECT_ROW: Final = "SELECT value, expires_at FROM entries WHERE key = ?"
_COUNT: Final = "SELECT entries FROM counts"
_PURGE: Final = (
    "DELETE FROM entries WHERE key IN (SELECT key FROM entries WHERE expires_at <= ? LIMIT ?)"
)
_UPSERT: Final = (
    "INSERT INTO entries (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key)"
    " DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
)
_UPDATE_VALUE: Final = "UPDATE entries SET value = ? WHERE key = ?"
_DELETE: Final = "DELETE FROM entries WHERE key = ?"


class CacheFile:
    """The cache file at ``path``, bounded to ``max_entries`` rows.

    Opening and the statements are synchronous; each method runs on whichever
    thread owns the connection it is given. Write methods expect to run inside
    ``transaction``. Nothing here waits for a lock: a locked file raises an
    ``sqlite3.OperationalError`` for which ``is_busy`` is true.
    """

    def __init__(self, path: Path, max_entries: int) -> None:
        self.path = path
        self.max_entries = max_entries

    # ------------------------------------------------------------------ opening

    def open_writer(self) -> sqlite3.Connection:
        """Create the file if missing, check that it is this store's, and open it for writing.

        A file that is not this store's raises ``CacheUnavailable`` and is left
        exactly as it was: nothing is written to it before it is recognised.
        """
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            # Created here rather than by SQLite so that no one else may read it;
            # SQLite gives the -wal and -shm files the same mode.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            os.close(os.open(self.path, flags, 0o600))
        conn = _connect(self.path)
        try:
            self._check_or_create(conn)
            for pragma in _WRITER_PRAGMAS:
                conn.execute(pragma)
            (mode,) = conn.execute(_JOURNAL_MODE).fetchone()
            if mode != "wal":
                raise CacheUnavailable(f"the local cache {self.path} cannot use WAL (got {mode})")
        except BaseException:
            conn.close()
            raise
        return conn

    def open_reader(self) -> sqlite3.Connection:
        """A read-only connection."""
        conn = _connect(self.path)
        for pragma in _READER_PRAGMAS:
            conn.execute(pragma)
        return conn

    def _check_or_create(self, conn: sqlite3.Connection) -> None:
        identity = conn.execute(_IDENTITY).fetchone()
        if identity == (0, 0):
            with transaction(conn):
                # Another process may have created the schema since the first look.
                identity = conn.execute(_IDENTITY).fetchone()
                if identity == (0, 0) and conn.execute(_HAS_TABLES).fetchone() is None:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    identity = (APPLICATION_ID, SCHEMA_VERSION)
        application, version = identity
        if application != APPLICATION_ID:
            raise CacheUnavailable(
                f"{self.path} is a SQLite database but not keel's local cache; it was left"
                " untouched: remove it or configure another path"
            )
        if version != SCHEMA_VERSION:
            raise CacheUnavailable(
                f"{self.path} is keel's local cache in schema version {version}, this keel"
                f" reads version {SCHEMA_VERSION}; it was left untouched: remove it or"
                " configure another path"
            )

    # -------------------------------------------------------------------- reads

    def get_many(
        self, conn: sqlite3.Connection, keys: Sequence[str], now: int
    ) -> list[bytes | None]:
        """The live values under ``keys``, in order."""
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            query = _SELECT_MANY.format(marks=",".join("?" * len(chunk)))
            found.update(conn.execute(query, (*chunk, now)))
        return [found.get(key) for key in keys]

    def expires_at(self, conn: sqlite3.Connection, key: str, now: int) -> int | None:
        """When the live ``key`` expires; ``None`` when absent or without expiry."""
        row = conn.execute(_SELECT_EXPIRY, (key, now)).fetchone()
        return None if row is None else row[0]

    def count(self, conn: sqlite3.Connection) -> int:
        """Rows in the file, expired ones not yet purged included."""
        (held,) = conn.execute(_COUNT).fetchone()
        return int(held)

    # ------------------------------------------------------------------- writes

    def set(
        self, conn: sqlite3.Connection, now: int, key: str, value: bytes, expires_at: int | None
    ) -> None:
        """Store ``value`` under ``key`` with ``expires_at``, replacing both."""
        self._make_room(conn, key, now)
        conn.execute(_UPSERT, (key, value, expires_at))

    def add(
        self, conn: sqlite3.Connection, now: int, key: str, value: bytes, expires_at: int | None
    ) -> bool:
        """Store ``value`` only if no live ``key``; ``True`` when stored."""
        row = conn.execute(_SELECT_ROW, (key,)).fetchone()
        if row is not None and _live(row[1], now):
            return False
        self.set(conn, now, key, value, expires_at)
        return True

    def set_if_newer(
        self, conn: sqlite3.Connection, now: int, key: str, value: bytes, expires_at: int | None
    ) -> bool:
        """Store the versioned ``value`` unless a live ``key`` holds one at least as new."""
        row = conn.execute(_SELECT_ROW, (key,)).fetchone()
        if row is not None and _live(row[1], now) and not is_newer(value, bytes(row[0])):
            return False
        self.set(conn, now, key, value, expires_at)
        return True

    def incr(
        self, conn: sqlite3.Connection, now: int, key: str, amount: int, expires_at: int | None
    ) -> int:
        """Add ``amount`` to the counter; ``expires_at`` applies only when this creates it."""
        row = conn.execute(_SELECT_ROW, (key,)).fetchone()
        if row is not None and _live(row[1], now):
            result = incremented(row[0], amount)
            # The value only: the expiry stays, so the window is fixed.
            conn.execute(_UPDATE_VALUE, (b"%d" % result, key))
            return result
        result = incremented(None, amount)
        self.set(conn, now, key, b"%d" % result, expires_at)
        return result

    def delete(self, conn: sqlite3.Connection, key: str) -> None:
        """Remove ``key`` if present."""
        conn.execute(_DELETE, (key,))

    def _make_room(self, conn: sqlite3.Connection, key: str, now: int) -> None:
        # Bounded work: at most PURGE_PER_WRITE expired rows go per write. If fewer went,
        # no expired row is left and every row counted is live; if that many went, there
        # is room. So a full file refuses a new key only when its keys are all live.
        conn.execute(_PURGE, (now, PURGE_PER_WRITE))
        if (
            self.count(conn) >= self.max_entries
            and conn.execute(_SELECT_ROW, (key,)).fetchone() is None
        ):
            raise CacheFull(
                f"the local cache {self.path} holds its maximum of {self.max_entries} keys"
            )


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any error."""
    conn.execute(_BEGIN)
    try:
        yield
        conn.execute(_COMMIT)
    finally:
        if conn.in_transaction:
            conn.execute(_ROLLBACK)


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the file is locked by another connection (as opposed to broken)."""
    code: int = getattr(exc, "sqlite_errorcode", 0)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _connect(path: Path) -> sqlite3.Connection:
    # timeout=0: no busy handler, a locked file raises at once (SQLITE_BUSY) and the
    # caller decides whether and how to wait. isolation_level=None: no implicit
    # transactions; writes open BEGIN IMMEDIATE themselves.
    return sqlite3.connect(path, timeout=0, isolation_level=None)


def _live(expires_at: int | None, now: int) -> bool:
    return expires_at is None or expires_at > now
