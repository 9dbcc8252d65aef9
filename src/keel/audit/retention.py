"""Retention: archive a prefix of the chain, delete it, and leave a sealed checkpoint.

``prune`` is the only way rows leave ``audit_events``, and it is audited. In
one transaction, holding the chain lock, it:

1. verifies the prefix it is about to delete (a broken prefix is refused:
   pruning must never destroy the evidence of tampering);
2. writes it to ``archive_path`` as JSON Lines (the export form, one event per
   line; re-verifiable by anyone with the key) and fsyncs it;
3. opens a prune window and deletes the prefix through the triggers' one
   exception, then closes the window;
4. records a sealed ``prune`` checkpoint at the last pruned row (where
   verification starts from now on);
5. appends an ``audit_pruned`` event saying what was pruned.

If anything fails the transaction rolls back and the archive is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keel._clock import Clock, SystemClock
from keel.audit._reading import CHUNK, lowest_seq
from keel.audit.chain import AuditKeyring, ChainLink
from keel.audit.checkpoints import Checkpoint, CheckpointKind, insert_checkpoint, load_checkpoints
from keel.audit.event import AuditEvent
from keel.audit.models import chain_head_table, events_table, prune_window_table
from keel.audit.query import event_json
from keel.audit.verify import (
    AuditChainBroken,
    ChainWalker,
    Expectations,
    Problem,
    ProblemKind,
    chain_start,
    expectations,
    walk_ranges,
)
from keel.audit.vocabulary import Action, ActorType, Result
from keel.audit.writer import record
from keel.db import Database
from keel.errors import ConfigurationError, InvalidInput

__all__ = ["PruneResult", "prune"]

_head = chain_head_table
_events = events_table
_window = prune_window_table

# A no-op update as the first statement: takes the chain lock (PostgreSQL row
# lock, SQLite write lock) before anything is read.
_LOCK_HEAD = (
    update(_head)
    .where(_head.c.id == 1)
    .values(seq=_head.c.seq)
    .returning(_head.c.seq, _head.c.hash)
)


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What ``prune`` removed and left behind."""

    count: int
    first_seq: int
    checkpoint: Checkpoint
    event: ChainLink
    archive: Path
    archive_sha256: str


class _Archive:
    """The JSON Lines file being written: a hidden temporary until ``publish``.

    Synchronous; ``prune`` calls it through ``asyncio.to_thread`` so the event
    loop never waits on the disk.
    """

    def __init__(self, path: Path) -> None:
        if path.exists():
            raise FileExistsError(f"the archive {path} already exists")
        self.path = path
        self._temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        self._handle = open(self._temporary, "x", encoding="ascii")  # noqa: SIM115
        self._digest = hashlib.sha256()
        self.published = False

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        lines = []
        for row in rows:
            values = list(row)
            values[11] = json.loads(values[11])  # details, stored as canonical JSON text
            record = event_json(*values)
            lines.append(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")
        text = "".join(lines)  # json.dumps escapes non-ASCII: one line per event, always
        self._digest.update(text.encode("ascii"))
        self._handle.write(text)

    def publish(self) -> None:
        """Make the archive durable under its final name (never replacing a file)."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.link(self._temporary, self.path)
        self.published = True
        self._temporary.unlink()
        with contextlib.suppress(OSError):  # not every platform can fsync a directory
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def discard(self) -> None:
        """Remove whatever was written (the prune did not commit)."""
        self._handle.close()
        for path in (self._temporary, self.path if self.published else None):
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()


async def prune(
    database: Database,
    keyring: AuditKeyring,
    *,
    before_seq: int,
    archive_path: str | os.PathLike[str],
    clock: Clock | None = None,
    actor_id: str | None = None,
    chunk_size: int = CHUNK,
) -> PruneResult:
    """Archive and delete every event with ``seq < before_seq``; see the module docstring.

    Raises ``InvalidInput`` when there is nothing to prune or ``before_seq``
    is past the head, ``FileExistsError`` if the archive exists, and
    ``AuditChainBroken`` if the prefix does not verify.
    """
    clock = clock or SystemClock()
    archive = await asyncio.to_thread(_Archive, Path(archive_path))
    try:
        async with database.unit_of_work() as uow:
            conn = await uow.session.connection()
            locked = (await conn.execute(_LOCK_HEAD)).one_or_none()
            if locked is None:
                raise ConfigurationError("the audit chain head row is missing: run keel db upgrade")
            head = ChainLink(int(locked[0]), str(locked[1]))
            start, expect = await _start_of(conn, keyring, before_seq, head)
            walker = await _archive_prefix(
                conn, keyring, start, expect, before_seq, archive, chunk_size
            )
            await asyncio.to_thread(archive.publish)
            if await _delete_prefix(conn, before_seq) != walker.count:
                problem = Problem(start.seq + 1, ProblemKind.GAP, "rows changed while pruning")
                raise AuditChainBroken(problem)
            now = clock.now()
            checkpoint = await insert_checkpoint(
                conn, keyring, walker.last, CheckpointKind.PRUNE, now
            )
            event = AuditEvent(
                action=Action.AUDIT_PRUNED,
                result=Result.SUCCESS,
                occurred_at=now,
                actor_type=ActorType.SYSTEM,
                actor_id=actor_id,
                target_type="audit_events",
                details={
                    "first_seq": start.seq + 1,
                    "last_seq": walker.last.seq,
                    "count": walker.count,
                    "archive": archive.path.name,
                    "archive_sha256_16": archive.sha256[:16],
                },
            )
            link = await record(uow, event, keyring)
    except BaseException:
        await asyncio.shield(asyncio.to_thread(archive.discard))
        raise
    return PruneResult(walker.count, start.seq + 1, checkpoint, link, archive.path, archive.sha256)


async def _start_of(
    conn: AsyncConnection, keyring: AuditKeyring, before_seq: int, head: ChainLink
) -> tuple[ChainLink, Expectations]:
    """Where the chain starts now, and what its checkpoints pin; refuses a bad request."""
    checkpoints = await load_checkpoints(conn)
    for checkpoint in checkpoints:
        reason = checkpoint.problem(keyring)
        if reason is not None:
            detail = f"{checkpoint.kind} checkpoint {checkpoint.id}: {reason}"
            raise AuditChainBroken(
                Problem(checkpoint.link.seq, ProblemKind.FORGED_CHECKPOINT, detail)
            )
    start = chain_start(checkpoints)
    if before_seq <= start.seq + 1:
        raise InvalidInput(
            f"nothing to prune before seq {before_seq}: the chain starts at seq {start.seq + 1}",
            code="nothing_to_prune",
        )
    if before_seq > head.seq + 1:
        raise InvalidInput(
            f"cannot prune before seq {before_seq}: the head is seq {head.seq}",
            code="prune_past_head",
        )
    expect, problem = expectations(checkpoints, start, None)
    if problem is not None:
        raise AuditChainBroken(problem)
    stray = await lowest_seq(conn, below=start.seq + 1)
    if stray is not None:
        detail = f"the chain starts after seq {start.seq}"
        raise AuditChainBroken(Problem(stray, ProblemKind.PRUNED_RANGE, detail))
    return start, expect


async def _archive_prefix(
    conn: AsyncConnection,
    keyring: AuditKeyring,
    start: ChainLink,
    expect: Expectations,
    before_seq: int,
    archive: _Archive,
    chunk_size: int,
) -> ChainWalker:
    """Verify the rows ``start.seq < seq < before_seq`` while writing them to ``archive``."""
    walker = ChainWalker(keyring, start, expect)

    async def write(rows: Sequence[Sequence[Any]]) -> None:
        await asyncio.to_thread(archive.write, rows)

    problem, _ = await walk_ranges(conn, walker, chunk_size, stop=before_seq, each=write)
    if problem is not None:
        raise AuditChainBroken(problem)
    if walker.last.seq != before_seq - 1:
        detail = "missing from the range to prune"
        raise AuditChainBroken(Problem(walker.last.seq + 1, ProblemKind.GAP, detail))
    return walker


async def _delete_prefix(conn: AsyncConnection, before_seq: int) -> int:
    """Delete ``seq < before_seq`` through the triggers' prune-window exception."""
    txid = func.txid_current() if conn.dialect.name == "postgresql" else None
    await conn.execute(insert(_window).values(before_seq=before_seq, txid=txid))
    deleted = await conn.execute(delete(_events).where(_events.c.seq < before_seq))
    await conn.execute(delete(_window).where(_window.c.before_seq == before_seq))
    return int(deleted.rowcount)
