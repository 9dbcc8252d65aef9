"""Reading events back: filtered pages for the admin API, a stream for SIEM export.

Pages are in ascending ``seq`` order with ``after_seq`` as the cursor: the next
page starts after the last seq of this one, and a page is complete history up
to its last row (new events only ever appear after it). Newest-first views
can page backwards from the head with ``before_seq``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select

from keel.audit._reading import lowest_seq, read_head
from keel.audit.canonical import format_timestamp
from keel.audit.models import events_table
from keel.db import Database, UnitOfWork
from keel.errors import InvalidInput

__all__ = ["MAX_PAGE", "AuditRecord", "event_json", "export_events", "query_events"]

MAX_PAGE: Final = 500
EXPORT_CHUNK: Final = 1000

_events = events_table
_COLUMNS: Final = (
    _events.c.seq,
    _events.c.occurred_at,
    _events.c.action,
    _events.c.result,
    _events.c.actor_type,
    _events.c.actor_id,
    _events.c.target_type,
    _events.c.target_id,
    _events.c.source_ip,
    _events.c.user_agent,
    _events.c.request_id,
    _events.c.details,
    _events.c.key_id,
    _events.c.prev_hash,
    _events.c.hash,
)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored event, as read back (values as stored; ``details`` parsed)."""

    seq: int
    occurred_at: datetime
    action: str
    result: str
    actor_type: str
    actor_id: str | None
    target_type: str | None
    target_id: str | None
    source_ip: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]
    key_id: str
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping; ``occurred_at`` in the canonical UTC form."""
        return event_json(
            self.seq,
            format_timestamp(self.occurred_at),
            self.action,
            self.result,
            self.actor_type,
            self.actor_id,
            self.target_type,
            self.target_id,
            self.source_ip,
            self.user_agent,
            self.request_id,
            self.details,
            self.key_id,
            self.prev_hash,
            self.hash,
        )

    def to_json_line(self) -> str:
        """One JSON Lines line (no newline): sorted keys, ASCII only, so it never splits."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def event_json(
    seq: int,
    occurred_at: str,
    action: str,
    result: str,
    actor_type: str,
    actor_id: str | None,
    target_type: str | None,
    target_id: str | None,
    source_ip: str | None,
    user_agent: str | None,
    request_id: str | None,
    details: dict[str, Any],
    key_id: str,
    prev_hash: str,
    digest: str,
) -> dict[str, Any]:
    """The export/archive form of an event: every field the row's hash covers, and the hash."""
    return {
        "seq": seq,
        "occurred_at": occurred_at,
        "action": action,
        "result": result,
        "actor_type": actor_type,
        "actor_id": actor_id,
        "target_type": target_type,
        "target_id": target_id,
        "source_ip": source_ip,
        "user_agent": user_agent,
        "request_id": request_id,
        "details": details,
        "key_id": key_id,
        "prev_hash": prev_hash,
        "hash": digest,
    }


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        seq=int(row.seq),
        occurred_at=row.occurred_at,
        action=row.action,
        result=row.result,
        actor_type=row.actor_type,
        actor_id=row.actor_id,
        target_type=row.target_type,
        target_id=row.target_id,
        source_ip=row.source_ip,
        user_agent=row.user_agent,
        request_id=row.request_id,
        details=json.loads(row.details),
        key_id=row.key_id,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidInput(f"{name} must be a timezone-aware datetime", code="invalid_time_range")


async def query_events(
    uow: UnitOfWork,
    *,
    action: str | None = None,
    actor_id: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    result: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_seq: int | None = None,
    before_seq: int | None = None,
    descending: bool = False,
    limit: int = 100,
) -> list[AuditRecord]:
    """One page of events matching every given filter, ordered by ``seq``.

    ``since <= occurred_at < until`` (aware datetimes). Ascending by default,
    continued with ``after_seq=page[-1].seq``; with ``descending=True`` newest
    first, continued with ``before_seq=page[-1].seq``. A page shorter than
    ``limit`` is the last one. ``limit`` is 1..``MAX_PAGE``.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", code="invalid_page_size")
    _aware("since", since)
    _aware("until", until)
    seq = _events.c.seq
    query = select(*_COLUMNS)
    if action is not None:
        query = query.where(_events.c.action == str(action))
    if actor_id is not None:
        query = query.where(_events.c.actor_id == actor_id)
    if target_type is not None:
        query = query.where(_events.c.target_type == target_type)
    if target_id is not None:
        query = query.where(_events.c.target_id == target_id)
    if result is not None:
        query = query.where(_events.c.result == str(result))
    if since is not None:
        query = query.where(_events.c.occurred_at >= since)
    if until is not None:
        query = query.where(_events.c.occurred_at < until)
    if after_seq is not None:
        query = query.where(seq > after_seq)
    if before_seq is not None:
        query = query.where(seq < before_seq)
    query = query.order_by(seq.desc() if descending else seq).limit(limit)
    rows = await uow.session.execute(query)
    return [_record(row) for row in rows]


async def export_events(
    database: Database, *, since_seq: int = 0, chunk_size: int = EXPORT_CHUNK
) -> AsyncIterator[AuditRecord]:
    """Every event with ``seq > since_seq`` up to the head as it was at the start, in order.

    Streams: one short unit of work per chunk of ``chunk_size`` seqs, nothing
    held between chunks, memory flat however long the chain is.
    """
    async with database.unit_of_work() as uow:
        conn = await uow.session.connection()
        head = await read_head(conn)
        first = await lowest_seq(conn, from_=since_seq + 1)
    if head is None or first is None:
        return
    last = head[0]
    seq = _events.c.seq
    while first <= last:
        stop = min(first + chunk_size, last + 1)
        async with database.unit_of_work() as uow:
            result = await uow.session.execute(
                select(*_COLUMNS).where(seq >= first, seq < stop).order_by(seq)
            )
            records = [_record(row) for row in result]
        for record in records:
            yield record
        first = stop
