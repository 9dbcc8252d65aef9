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

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import BigInteger, bindparam, insert, update

from keel.audit.canonical import canonical_json, canonical_row_text, format_timestamp
from keel.audit.chain import AuditKeyring, ChainLink
from keel.audit.event import AuditEvent
from keel.audit.models import chain_head_table, events_table
from keel.db import Database, UnitOfWork
from keel.errors import ConfigurationError

__all__ = ["record", "record_alone", "record_many"]

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
    # Flushes the caller's pending changes first (autoflush), then takes the lock.
    advanced = (await session.execute(_ADVANCE, {"reserve": len(events)})).one_or_none()
    if advanced is None:
        raise ConfigurationError("the audit chain head row is missing: run `keel db upgrade`")
    last_seq = int(advanced[0])
    rows = _seal_rows(prepared, last_seq - len(events) + 1, str(advanced[1]), keyring)
    # The head's hash follows each inserted row (trigger ``audit_events_head``).
    driver = await _asyncpg_in_transaction(uow)
    if driver is None:
        mapped = [dict(zip(_COLUMNS, row, strict=True)) for row in rows]
        await session.execute(_INSERT, mapped if len(mapped) > 1 else mapped[0])
    elif len(rows) == 1:
        await driver.execute(_PG_INSERT, *rows[0])
    else:
        await driver.executemany(_PG_INSERT, rows)
    return [ChainLink(row[0], row[-1]) for row in rows]


async def _asyncpg_in_transaction(uow: UnitOfWork) -> Any | None:
    """The asyncpg connection under ``uow`` (PostgreSQL), once its transaction has begun."""
    conn = await uow.session.connection()
    if conn.dialect.name != "postgresql":
        return None
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is None or not driver.is_in_transaction():
        return None
    return driver


async def record_alone(database: Database, event: AuditEvent, keyring: AuditKeyring) -> ChainLink:
    """Append ``event`` in a short transaction of its own (e.g. a failed login).

    Returns once the event is committed; raises if it could not be (never
    fire-and-forget).
    """
    async with database.unit_of_work() as uow:
        return await record(uow, event, keyring)
