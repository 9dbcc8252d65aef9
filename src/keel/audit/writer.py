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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

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


async def record(uow: UnitOfWork, event: AuditEvent, keyring: AuditKeyring) -> ChainLink:
    """Append ``event`` to the chain inside ``uow``'s transaction; returns its seq and hash."""
    return (await record_many(uow, (event,), keyring))[0]


async def record_many(
    uow: UnitOfWork, events: Sequence[AuditEvent], keyring: AuditKeyring
) -> list[ChainLink]:
    """Append ``events``, in order, inside ``uow``'s transaction (one lock, one insert)."""
    if not events:
        return []
    session = uow.session
    advanced = (await session.execute(_ADVANCE, {"reserve": len(events)})).one_or_none()
    if advanced is None:
        raise ConfigurationError("the audit chain head row is missing: run `keel db upgrade`")
    last_seq, prev_hash = int(advanced[0]), str(advanced[1])
    key_id = keyring.current_id
    rows: list[dict[str, object]] = []
    links: list[ChainLink] = []
    for seq, event in enumerate(events, start=last_seq - len(events) + 1):
        details_json = canonical_json(event.details).decode("utf-8")
        canonical = canonical_row_text(
            seq,
            key_id,
            prev_hash,
            format_timestamp(event.occurred_at),
            event.action.value,
            event.result.value,
            event.actor_type.value,
            event.actor_id,
            event.target_type,
            event.target_id,
            event.source_ip,
            event.user_agent,
            event.request_id,
            details_json,
        )
        digest = keyring.seal(canonical)
        rows.append(
            {
                "seq": seq,
                "occurred_at": event.occurred_at,
                "action": event.action.value,
                "result": event.result.value,
                "actor_type": event.actor_type.value,
                "actor_id": event.actor_id,
                "target_type": event.target_type,
                "target_id": event.target_id,
                "source_ip": event.source_ip,
                "user_agent": event.user_agent,
                "request_id": event.request_id,
                "details": details_json,
                "key_id": key_id,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        links.append(ChainLink(seq, digest))
        prev_hash = digest
    # The head's hash follows each inserted row (trigger ``audit_events_head``).
    await session.execute(_INSERT, rows if len(rows) > 1 else rows[0])
    return links


async def record_alone(database: Database, event: AuditEvent, keyring: AuditKeyring) -> ChainLink:
    """Append ``event`` in a short transaction of its own (e.g. a failed login).

    Returns once the event is committed; raises if it could not be (never
    fire-and-forget).
    """
    async with database.unit_of_work() as uow:
        return await record(uow, event, keyring)
