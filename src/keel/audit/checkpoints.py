"""Sealed checkpoints: (seq, hash) pairs the chain must keep agreeing with.

A ``prune`` checkpoint is where a pruned chain now starts (the last pruned
row); a ``manual`` one is a head recorded by ``keel audit checkpoint``. Each
row carries an HMAC over its own canonical form (below), made with the audit
key like the rows, so a checkpoint inserted or edited without the key is
detected instead of being trusted as a new starting point::

    {"created_at": "...Z", "hash": "<hex>", "id": "<uuid>", "key_id": "k1",
     "kind": "prune", "seq": 42, "type": "audit_checkpoint", "v": 1}

(canonical JSON as in ``keel.audit.canonical``; the ``type`` key keeps a
checkpoint's seal from ever being mistaken for a row hash).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from keel._clock import Clock
from keel.audit._reading import read_head
from keel.audit.canonical import FORMAT_VERSION, canonical_json, format_timestamp
from keel.audit.chain import AuditKeyring, ChainLink
from keel.audit.models import checkpoints_table
from keel.db import Database
from keel.errors import ConfigurationError

__all__ = [
    "Checkpoint",
    "CheckpointKind",
    "checkpoint_canonical",
    "insert_checkpoint",
    "load_checkpoints",
    "take_checkpoint",
]

_checkpoints = checkpoints_table


class CheckpointKind(StrEnum):
    PRUNE = "prune"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One checkpoint row as stored."""

    id: uuid.UUID
    link: ChainLink
    kind: str
    created_at: datetime
    key_id: str
    seal: str

    def problem(self, keyring: AuditKeyring) -> str | None:
        """Why this checkpoint cannot be trusted, or ``None`` when its seal is sound."""
        sealer = keyring.sealer(self.key_id)
        if sealer is None:
            return f"unknown key id {self.key_id!r}"
        canonical = checkpoint_canonical(
            self.id, self.link, self.kind, self.created_at, self.key_id
        )
        if sealer(canonical) != self.seal:
            return "seal mismatch"
        return None


def checkpoint_canonical(
    checkpoint_id: uuid.UUID, link: ChainLink, kind: str, created_at: datetime, key_id: str
) -> bytes:
    """The bytes a checkpoint's seal covers."""
    return canonical_json(
        {
            "type": "audit_checkpoint",
            "v": FORMAT_VERSION,
            "id": str(checkpoint_id),
            "seq": link.seq,
            "hash": link.hash,
            "kind": str(kind),
            "created_at": format_timestamp(created_at),
            "key_id": key_id,
        }
    )


async def load_checkpoints(conn: AsyncConnection) -> list[Checkpoint]:
    """Every checkpoint, oldest position first."""
    rows = await conn.execute(
        select(
            _checkpoints.c.id,
            _checkpoints.c.seq,
            _checkpoints.c.hash,
            _checkpoints.c.kind,
            _checkpoints.c.created_at,
            _checkpoints.c.key_id,
            _checkpoints.c.seal,
        ).order_by(_checkpoints.c.seq, _checkpoints.c.created_at)
    )
    return [
        Checkpoint(
            id=row.id,
            link=ChainLink(int(row.seq), str(row.hash)),
            kind=str(row.kind),
            created_at=row.created_at,
            key_id=str(row.key_id),
            seal=str(row.seal),
        )
        for row in rows
    ]


async def insert_checkpoint(
    conn: AsyncConnection,
    keyring: AuditKeyring,
    link: ChainLink,
    kind: CheckpointKind,
    created_at: datetime,
) -> Checkpoint:
    """Seal and store a checkpoint at ``link`` in ``conn``'s transaction."""
    checkpoint_id = uuid.uuid4()
    key_id = keyring.current_id
    seal = keyring.seal(checkpoint_canonical(checkpoint_id, link, kind, created_at, key_id))
    await conn.execute(
        insert(_checkpoints).values(
            id=checkpoint_id,
            seq=link.seq,
            hash=link.hash,
            kind=kind.value,
            created_at=created_at,
            key_id=key_id,
            seal=seal,
        )
    )
    return Checkpoint(checkpoint_id, link, kind.value, created_at, key_id, seal)


async def take_checkpoint(database: Database, keyring: AuditKeyring, *, clock: Clock) -> Checkpoint:
    """Record the current head as a sealed ``manual`` checkpoint and return it.

    Print ``checkpoint.link`` and keep it outside the database: ``verify(...,
    against=...)`` later proves the chain still holds that row and extends it.
    """
    async with database.unit_of_work() as uow:
        conn = await uow.session.connection()
        head = await read_head(conn)
        if head is None:
            raise ConfigurationError("the audit chain head row is missing: run `keel db upgrade`")
        return await insert_checkpoint(
            conn, keyring, ChainLink(*head), CheckpointKind.MANUAL, clock.now()
        )
