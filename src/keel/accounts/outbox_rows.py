"""The outbox's queries: claim due messages under a lease, then settle each one.

A claim is one ``UPDATE`` of the due rows it selects, setting a fresh claim
token and ``lease_until``; every later write names that token, so a sender
whose lease ran out (and whose row another sender took) changes nothing.

- PostgreSQL: the rows are picked by a subquery ``FOR UPDATE SKIP LOCKED``,
  so concurrent senders on any instance take disjoint rows without waiting.
- SQLite: the same statement without the locking clause (SQLAlchemy leaves it
  out); SQLite runs one writer at a time, so the conditional ``UPDATE`` is
  atomic and a second sender's claim no longer matches a claimed row.

A cheap read comes first, so an idle poll never takes SQLite's write lock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import ColumnElement, Table, and_, delete, func, or_, select, update

from keel.accounts.models import OutboxMessage
from keel.db import Database, UnitOfWork

__all__ = [
    "FAILED",
    "PENDING",
    "SENT",
    "ClaimedMessage",
    "claim_due",
    "forget_user",
    "next_due",
    "pending_count",
    "settle",
]

PENDING = "pending"
SENT = "sent"
FAILED = "failed"

_TABLE = cast(Table, OutboxMessage.__table__)
_C = _TABLE.c


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """A row claimed for one attempt (``attempts`` counts this one)."""

    id: uuid.UUID
    kind: str
    recipient: str
    subject: str
    body_sealed: bytes | None
    key_id: str
    user_id: str | None
    attempts: int
    claim: str


def _due(now: datetime) -> ColumnElement[bool]:
    return and_(
        _C.status == PENDING,
        _C.available_at <= now,
        or_(_C.lease_until.is_(None), _C.lease_until <= now),
    )


async def claim_due(
    database: Database, *, now: datetime, lease_until: datetime, limit: int
) -> list[ClaimedMessage]:
    """Claim up to ``limit`` due messages until ``lease_until``; the ones this call won."""
    async with database.unit_of_work() as uow:
        found = await uow.session.execute(select(_C.id).where(_due(now)).limit(1))
        if found.first() is None:
            return []
    claim = uuid.uuid4().hex
    # A materialised CTE runs once: as a plain ``IN (subquery)`` PostgreSQL may rescan the
    # subquery for the outer rows and update more than ``limit`` of them.
    picked = (
        select(_C.id)
        .where(_due(now))
        .order_by(_C.available_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("picked")
        .prefix_with("MATERIALIZED")
    )
    statement = (
        update(_TABLE)
        .where(_C.id.in_(select(picked.c.id)), _due(now))
        .values(claim=claim, lease_until=lease_until, attempts=_C.attempts + 1)
        .returning(
            _C.id,
            _C.kind,
            _C.recipient,
            _C.subject,
            _C.body_sealed,
            _C.key_id,
            _C.user_id,
            _C.attempts,
        )
    )
    async with database.unit_of_work() as uow:
        rows = (await uow.session.execute(statement)).all()
    return [
        ClaimedMessage(
            id=row.id,
            kind=row.kind,
            recipient=row.recipient,
            subject=row.subject,
            body_sealed=row.body_sealed,
            key_id=row.key_id,
            user_id=row.user_id,
            attempts=row.attempts,
            claim=claim,
        )
        for row in rows
    ]


async def settle(
    database: Database,
    message: ClaimedMessage,
    *,
    status: str,
    at: datetime,
    error: str | None = None,
) -> bool:
    """End the claim: ``sent``/``failed`` (body emptied) or ``pending`` again, due at ``at``.

    ``False`` when the claim was lost (the lease ran out and another sender took the row).
    """
    values: dict[str, object] = {"status": status, "claim": None, "lease_until": None}
    if status == PENDING:
        values.update(available_at=at, last_error=error)
    elif status == SENT:
        values.update(sent_at=at, body_sealed=None)
    else:
        values.update(failed_at=at, body_sealed=None, last_error=error)
    statement = (
        update(_TABLE)
        .where(_C.id == message.id, _C.claim == message.claim, _C.status == PENDING)
        .values(**values)
    )
    async with database.unit_of_work() as uow:
        result = await uow.session.execute(statement)
    return bool(getattr(result, "rowcount", 0))


async def forget_user(uow: UnitOfWork, user_id: str) -> None:
    """In ``uow``: delete the messages of ``user_id``, but any a sender holds at this moment.

    A held message is left to its sender, which settles it; the housekeeping prunes it.
    """
    await uow.session.execute(delete(_TABLE).where(_C.user_id == user_id, _C.claim.is_(None)))


async def pending_count(database: Database) -> int:
    """Messages not yet sent or given up (the outbox depth): one indexed count."""
    async with database.unit_of_work() as uow:
        count = await uow.session.scalar(
            select(func.count()).select_from(_TABLE).where(_C.status == PENDING)
        )
    return int(count or 0)


async def next_due(database: Database) -> datetime | None:
    """When the earliest pending message is due (``None``: nothing pending)."""
    async with database.unit_of_work() as uow:
        due = await uow.session.scalar(
            select(func.min(_C.available_at)).where(_C.status == PENDING)
        )
    return cast(datetime | None, due)
