"""Appending to the chain, inside the caller's transaction.

``record`` is part of the caller's unit of work: the event commits with the
business change or rolls back with it, so there is never a change without its
event nor an event without its change. Its first statement advances the chain
head (``UPDATE ... SET seq = seq + 1 ... RETURNING``): on PostgreSQL that takes
the head row's lock at once, on SQLite the database write lock (waiting up to
the busy timeout). Either lock is held until the caller's transaction ends, so
appends are serialised, and a rolled-back append gives its seq back: the chain
stays gapless. The insert is the second and last statement: a trigger
(``audit_events_head``, revision 0002) moves the head's hash to the new row.

Call ``record`` as the last step of a unit of work, after the business writes:
the chain lock is then held only for the commit, and no other lock is taken
while it is held (no lock-order deadlocks).

Appends are serialised on that lock, so what happens while it is held bounds
the append rate: everything that does not depend on the seq or the previous
hash (details JSON, timestamp text) is prepared before the lock is taken, and
on PostgreSQL the insert goes straight through the asyncpg connection under
the session (same transaction; prepared once per connection), without
SQLAlchemy's per-statement work.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

from sqlalchemy import BigInteger, bindparam, insert, update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection

from keel.audit.canonical import canonical_json, canonical_row_text, format_timestamp
from keel.audit.chain import AuditKeyring, ChainLink
from keel.audit.event import AuditEvent
from keel.audit.models import chain_head_table, events_table
from keel.db import Database, UnitOfWork, is_unavailable_error
from keel.errors import ConfigurationError, DatabaseUnavailable

__all__ = ["append_alone", "record", "record_alone", "record_many"]

_head = chain_head_table
_events = events_table

# The first statement of every append: takes the chain lock and reserves seqs.
_ADVANCE: Final = (
    update(_head)
    .where(_head.c.id == 1)
    .values(seq=_head.c.seq + bindparam("reserve", type_=BigInteger()))
    .returning(_head.c.seq, _head.c.hash)
)
_INSERT: Final = insert(_events)
_COLUMNS: Final = (
    "seq",
    "occurred_at",
    "action",
    "result",
    "actor_type",
    "actor_id",
    "target_type",
    "target_id",
    "source_ip",
    "user_agent",
    "request_id",
    "details",
    "key_id",
    "prev_hash",
    "hash",
)
# The same insert for asyncpg (``_COLUMNS`` in order; a test checks the two agree).
_PG_INSERT: Final = (
    "INSERT INTO audit_events (seq, occurred_at, action, result, actor_type, actor_id, "
    "target_type, target_id, source_ip, user_agent, request_id, details, key_id, prev_hash, "
    "hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
)

# The speculative append (PostgreSQL): advance the head *only if* it is still where this
# process last saw it (``$18``/``$19``) and insert the rows chained from there, in one
# statement. Under a concurrent append the UPDATE waits for the head's row lock and then
# re-checks its WHERE against the committed head (READ COMMITTED): a stale guess matches
# nothing, inserts nothing, and the writer falls back to the locking path.
_PG_APPEND: Final = (
    "WITH advanced AS (UPDATE audit_chain_head SET seq = $16, hash = $17 "
    "WHERE id = 1 AND seq = $18 AND hash = $19 RETURNING seq) "
    "INSERT INTO audit_events (seq, occurred_at, action, result, actor_type, actor_id, "
    "target_type, target_id, source_ip, user_agent, request_id, details, key_id, prev_hash, "
    "hash) SELECT r.* FROM advanced, unnest($1::bigint[], $2::timestamptz[], $3::text[], "
    "$4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], "
    "$11::text[], $12::text[], $13::text[], $14::text[], $15::text[]) AS r"
)

# An event's stored values but seq, key id and hashes, and its timestamp text.
_Prepared = tuple[tuple[Any, ...], str]


def _prepare(event: AuditEvent) -> _Prepared:
    """What can be computed before the chain lock: every value that is not chained."""
    values = (
        event.occurred_at,
        event.action.value,
        event.result.value,
        event.actor_type.value,
        event.actor_id,
        event.target_type,
        event.target_id,
        event.source_ip,
        event.user_agent,
        event.request_id,
        canonical_json(event.details).decode("utf-8"),
    )
    return values, format_timestamp(event.occurred_at)


def _seal_rows(
    prepared: Sequence[_Prepared], first_seq: int, prev_hash: str, keyring: AuditKeyring
) -> list[tuple[Any, ...]]:
    """The rows to insert, in ``_COLUMNS`` order, chained from ``prev_hash``."""
    key_id = keyring.current_id
    rows = []
    for seq, (values, timestamp) in enumerate(prepared, start=first_seq):
        (_, action, result, actor_type, actor_id, target_type, target_id) = values[:7]
        source_ip, user_agent, request_id, details_json = values[7:]
        canonical = canonical_row_text(
            seq,
            key_id,
            prev_hash,
            timestamp,
            action,
            result,
            actor_type,
            actor_id,
            target_type,
            target_id,
            source_ip,
            user_agent,
            request_id,
            details_json,
        )
        digest = keyring.seal(canonical)
        rows.append((seq, *values, key_id, prev_hash, digest))
        prev_hash = digest
    return rows


async def record(uow: UnitOfWork, event: AuditEvent, keyring: AuditKeyring) -> ChainLink:
    """Append ``event`` to the chain inside ``uow``'s transaction; returns its seq and hash."""
    return (await record_many(uow, (event,), keyring))[0]


async def record_many(
    uow: UnitOfWork, events: Sequence[AuditEvent], keyring: AuditKeyring
) -> list[ChainLink]:
    """Append ``events``, in order, inside ``uow``'s transaction (one lock, one insert)."""
    if not events:
        return []
    prepared = [_prepare(event) for event in events]
    session = uow.session
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        # The caller's pending changes go out first, before the chain lock is taken.
        await session.flush()
        links = await _speculate(conn.sync_engine, prepared, keyring, _in_transaction(uow, conn))
        if links is not None:
            return links
    return await _locked(uow, prepared, keyring)


async def record_alone(database: Database, event: AuditEvent, keyring: AuditKeyring) -> ChainLink:
    """Append ``event`` in a short transaction of its own (e.g. a failed login).

    Returns once the event is committed; raises if it could not be (never
    fire-and-forget).
    """
    return (await append_alone(database, (event,), keyring))[0]


async def append_alone(
    database: Database, events: Sequence[AuditEvent], keyring: AuditKeyring
) -> list[ChainLink]:
    """Append ``events`` in one short transaction of their own; returns once committed.

    On PostgreSQL the speculative statement runs on its own (autocommit), so
    the head's row lock is held only while the server inserts and flushes,
    never across a round trip to this process; a stale guess falls back to a
    unit of work on the locking path. ``DatabaseUnavailable`` when the
    database cannot be reached.
    """
    if not events:
        return []
    prepared = [_prepare(event) for event in events]
    if database.dialect == "postgresql":
        async with _autocommit(database) as driver:
            engine = database.engine.sync_engine
            links = await _speculate(engine, prepared, keyring, _on_connection(driver))
        if links is not None:
            return links
    async with database.unit_of_work() as uow:
        return await _locked(uow, prepared, keyring)


# --------------------------------------------------------------------------- PostgreSQL


class _Tail:
    """Where this process believes the chain ends: its newest append, committed or in flight."""

    __slots__ = ("link",)

    def __init__(self) -> None:
        self.link: ChainLink | None = None


# One tail per engine (per database of this process); only ever a guess, checked by the
# database on every use.
_tails: weakref.WeakKeyDictionary[Engine, _Tail] = weakref.WeakKeyDictionary()


def _tail(engine: Engine) -> _Tail:
    tail = _tails.get(engine)
    if tail is None:
        tail = _tails[engine] = _Tail()
    return tail


_Execute = Any  # async (statement, *args) -> rows inserted


async def _speculate(
    engine: Engine, prepared: Sequence[_Prepared], keyring: AuditKeyring, execute: _Execute
) -> list[ChainLink] | None:
    """Append chained from this process's tail, in one statement; ``None`` if the guess was stale.

    The tail moves to the new rows *before* the statement is sent, so the next
    append of this process chains after them and its statement waits, on the
    server, for this one's transaction: concurrent appends of one process
    queue on the head's row lock without a round trip between them. If this
    append fails or rolls back, the ones chained after it find the head
    elsewhere and fall back too.
    """
    tail = _tail(engine)
    guess = tail.link
    if guess is None:
        return None
    rows = _seal_rows(prepared, guess.seq + 1, guess.hash, keyring)
    last = ChainLink(rows[-1][0], rows[-1][-1])
    tail.link = last
    columns = [list(column) for column in zip(*rows, strict=True)]
    inserted = await execute(_PG_APPEND, *columns, last.seq, last.hash, guess.seq, guess.hash)
    if inserted != len(rows):
        return None
    return [ChainLink(row[0], row[-1]) for row in rows]


def _in_transaction(uow: UnitOfWork, conn: AsyncConnection) -> _Execute:
    """Run a statement inside ``uow``: on its asyncpg connection once its transaction has begun."""

    async def execute(statement: str, *args: Any) -> int:
        driver = (await conn.get_raw_connection()).driver_connection
        if driver is not None and driver.is_in_transaction():
            status = await driver.execute(statement, *args)
            return int(status.rsplit(" ", 1)[-1])
        # The unit of work's first statement: SQLAlchemy begins its transaction.
        return (await conn.exec_driver_sql(statement, args)).rowcount

    return execute


def _on_connection(driver: Any) -> _Execute:
    """Run a statement on a bare asyncpg connection: outside a transaction, it commits alone."""

    async def execute(statement: str, *args: Any) -> int:
        status = await driver.execute(statement, *args)
        return int(status.rsplit(" ", 1)[-1])

    return execute


@asynccontextmanager
async def _autocommit(database: Database) -> AsyncIterator[Any]:
    """A pooled connection's asyncpg driver, outside any transaction (autocommit)."""
    try:
        async with database.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            yield driver
    except Exception as exc:
        if is_unavailable_error(exc):
            raise DatabaseUnavailable("the database is unavailable") from exc
        raise


# --------------------------------------------------------------------------- locking path


async def _locked(
    uow: UnitOfWork, prepared: Sequence[_Prepared], keyring: AuditKeyring
) -> list[ChainLink]:
    """Take the chain lock, read the head, insert the rows chained from it (any database)."""
    session = uow.session
    # Flushes the caller's pending changes first (autoflush), then takes the lock.
    advanced = (await session.execute(_ADVANCE, {"reserve": len(prepared)})).one_or_none()
    if advanced is None:
        raise ConfigurationError("the audit chain head row is missing: run `keel db upgrade`")
    last_seq = int(advanced[0])
    rows = _seal_rows(prepared, last_seq - len(prepared) + 1, str(advanced[1]), keyring)
    links = [ChainLink(row[0], row[-1]) for row in rows]
    conn = await session.connection()
    if conn.dialect.name != "postgresql":
        mapped = [dict(zip(_COLUMNS, row, strict=True)) for row in rows]
        await session.execute(_INSERT, mapped if len(mapped) > 1 else mapped[0])
        return links
    # This process's next append chains after these rows (the lock is held until commit).
    _tail(conn.sync_engine).link = links[-1]
    # The head's hash follows each inserted row (trigger ``audit_events_head``).
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    assert driver.is_in_transaction()  # the UPDATE began it
    if len(rows) == 1:
        await driver.execute(_PG_INSERT, *rows[0])
    else:
        await driver.executemany(_PG_INSERT, rows)
    return links
