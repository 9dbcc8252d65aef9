"""The audit tables (created by revision ``0002``; identical on PostgreSQL and SQLite).

- ``audit_events``: the chain. ``seq`` is assigned by the writer from the chain
  head (gapless, never reused); ``details`` holds the canonical JSON text of
  the details object, so re-hashing a stored row is exact.
- ``audit_chain_head``: exactly one row (``id = 1``) holding the last seq and
  hash. Every append starts by updating it, which takes its row lock on
  PostgreSQL and the write lock on SQLite: appends are serialised. An
  ``AFTER INSERT`` trigger on ``audit_events`` keeps its hash on the newest row.
- ``audit_checkpoints``: sealed (seq, hash) pairs: ``prune`` ones mark where a
  pruned chain now starts, ``manual`` ones are heads taken by ``keel audit
  checkpoint``. Each carries its own HMAC, so a forged one is detected.
- ``audit_prune_window``: written and emptied inside the retention command's
  transaction; the only thing that lets the triggers allow a DELETE.

Triggers (in the migration) refuse UPDATE and DELETE of events and checkpoints
(and TRUNCATE on PostgreSQL), except DELETE of events below an open prune window.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, SmallInteger, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from keel.db import Base

__all__ = [
    "AuditChainHead",
    "AuditCheckpointRow",
    "AuditEventRow",
    "AuditPruneWindow",
    "chain_head_table",
    "checkpoints_table",
    "events_table",
    "prune_window_table",
]

HASH_LENGTH = 64


class AuditEventRow(Base):
    """One sealed audit event."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(String(16))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(Text)
    target_type: Mapped[str | None] = mapped_column(Text)
    target_id: Mapped[str | None] = mapped_column(Text)
    source_ip: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text)
    details: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(32))
    prev_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    hash: Mapped[str] = mapped_column(String(HASH_LENGTH))

    # The admin filters, each ending in seq so a filtered page is an index range scan.
    __table_args__ = (
        Index("ix_audit_events_action_seq", "action", "seq"),
        Index("ix_audit_events_actor_id_seq", "actor_id", "seq"),
        Index("ix_audit_events_target_seq", "target_type", "target_id", "seq"),
        Index("ix_audit_events_result_seq", "result", "seq"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
    )


class AuditChainHead(Base):
    """The single row every append locks first: the last seq and its hash."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(HASH_LENGTH))

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class AuditCheckpointRow(Base):
    """A sealed (seq, hash): where a pruned chain starts, or a head taken for safekeeping."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(String(32))
    seal: Mapped[str] = mapped_column(String(HASH_LENGTH))

    __table_args__ = (
        CheckConstraint("kind IN ('prune', 'manual')", name="kind"),
        Index("ix_audit_checkpoints_kind_seq", "kind", "seq"),
    )


class AuditPruneWindow(Base):
    """Open only inside ``prune``'s transaction: events below ``before_seq`` may be deleted.

    On PostgreSQL the trigger also requires ``txid`` to be the deleting
    transaction's own id, so a window left behind opens nothing.
    """

    __tablename__ = "audit_prune_window"

    before_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    txid: Mapped[int | None] = mapped_column(BigInteger)


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


# The same tables for Core statements (the audit code reads and writes in bulk, not via the ORM).
events_table = _table(AuditEventRow)
chain_head_table = _table(AuditChainHead)
checkpoints_table = _table(AuditCheckpointRow)
prune_window_table = _table(AuditPruneWindow)
