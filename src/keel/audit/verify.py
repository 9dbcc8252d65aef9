"""Verifying the chain: every row re-sealed and linked, in order, streamed in chunks.

The walk starts at the latest sound ``prune`` checkpoint (or at genesis) and
reads the rows in seq order, ``CHUNK`` at a time, inside one snapshot. It
stops at the first problem, in this order for each row:

1. gap: the row's seq is not the next one (a row was deleted), or a row
   sits at or before the prune checkpoint (inserted into the pruned range);
2. unknown key id: the keyring has no key of that id;
3. hash mismatch: the HMAC over the row's canonical form differs (a field,
   its seq or its ``prev_hash`` was changed, or the row was forged);
4. fork or broken link: ``prev_hash`` is not the predecessor's hash; a fork
   when it is the hash of an earlier row, a broken link otherwise;
5. checkpoint mismatch: a checkpoint (or ``against``) names this seq with
   another hash.

Before the walk every checkpoint's own seal is checked (a forged checkpoint
is reported at its seq); after it, the chain must reach every checkpoint and
``against`` and the chain head row (else: truncated, reported at the first
missing seq: the newest rows were deleted), and end exactly at the head.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from keel._logging import event as log_event
from keel.audit._reading import CHUNK, iter_ranges, lowest_seq, read_head, snapshot_connection
from keel.audit.canonical import canonical_row_text
from keel.audit.chain import GENESIS, AuditKeyring, ChainLink, Sealer
from keel.audit.checkpoints import Checkpoint, CheckpointKind, load_checkpoints
from keel.audit.models import events_table
from keel.db import Database
from keel.errors import ConfigurationError, KeelError

__all__ = [
    "AuditChainBroken",
    "ChainWalker",
    "Expectations",
    "Problem",
    "ProblemKind",
    "VerifyResult",
    "chain_start",
    "expectations",
    "explain_link_problem",
    "verify",
    "walk_ranges",
]

_events = events_table
_log = logging.getLogger("keel.audit")


class ProblemKind(StrEnum):
    """Why a chain is not sound."""

    GAP = "gap"
    PRUNED_RANGE = "row in the pruned range"
    UNKNOWN_KEY = "unknown key id"
    HASH_MISMATCH = "hash mismatch"
    FORK = "fork"
    BROKEN_LINK = "broken link"
    FORGED_CHECKPOINT = "forged checkpoint"
    CHECKPOINT_MISMATCH = "checkpoint mismatch"
    TRUNCATED = "truncated"
    HEAD_MISMATCH = "head mismatch"


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong: at which seq, what kind, and a short explanation."""

    seq: int
    kind: ProblemKind
    detail: str = ""

    def __str__(self) -> str:
        suffix = f" ({self.detail})" if self.detail else ""
        return f"BROKEN at seq {self.seq}: {self.kind}{suffix}"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What ``verify`` found: how many rows were sound, from where, up to which head."""

    count: int
    start: ChainLink
    head: ChainLink
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def bad_seq(self) -> int | None:
        return None if self.problem is None else self.problem.seq

    def __str__(self) -> str:
        if self.problem is not None:
            return str(self.problem)
        return f"OK {self.count} events, head {self.head}"


class AuditChainBroken(KeelError):
    """The audit chain does not verify; the operation that needed it was refused."""

    code: ClassVar[str] = "audit_chain_broken"

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


# Expected hashes at some seqs: seq -> [(hash, what expects it)].
Expectations = Mapping[int, Sequence[tuple[str, str]]]


class ChainWalker:
    """Checks rows (``_reading.chain_columns``) one chunk after another from ``start``."""

    def __init__(
        self, keyring: AuditKeyring, start: ChainLink, expect: Expectations | None = None
    ) -> None:
        self._keyring = keyring
        self._expect: Expectations = expect or {}
        self.start = start
        self.last = start
        self.count = 0

    def walk(self, rows: Sequence[Sequence[Any]]) -> Problem | None:
        """Check ``rows``; the first problem, or ``None`` with ``last``/``count`` advanced."""
        expect = self._expect
        sealers: dict[str, Sealer | None] = {}
        prev_seq, prev_hash = self.last.seq, self.last.hash
        count = self.count
        problem: Problem | None = None
        for row in rows:
            (
                seq,
                occurred_at,
                action,
                result,
                actor_type,
                actor_id,
                target_type,
                target_id,
                source_ip,
                user_agent,
                request_id,
                details,
                key_id,
                row_prev_hash,
                digest,
            ) = row
            if seq != prev_seq + 1:
                if seq <= self.start.seq:
                    problem = Problem(
                        seq,
                        ProblemKind.PRUNED_RANGE,
                        f"the chain starts after seq {self.start.seq}",
                    )
                else:
                    problem = Problem(
                        prev_seq + 1, ProblemKind.GAP, f"missing; the next row is seq {seq}"
                    )
                break
            if key_id in sealers:
                sealer = sealers[key_id]
            else:
                sealer = sealers[key_id] = self._keyring.sealer(key_id)
            if sealer is None:
                problem = Problem(seq, ProblemKind.UNKNOWN_KEY, repr(key_id))
                break
            canonical = canonical_row_text(
                seq,
                key_id,
                row_prev_hash,
                occurred_at,
                action,
                result,
                actor_type,
                actor_id,
                target_type,
                target_id,
                source_ip,
                user_agent,
                request_id,
                details,
            )
            if sealer(canonical) != digest:
                problem = Problem(seq, ProblemKind.HASH_MISMATCH)
                break
            if row_prev_hash != prev_hash:
                # Refined into fork / broken link by the caller, which can search earlier rows.
                problem = Problem(seq, ProblemKind.BROKEN_LINK, row_prev_hash)
                break
            if seq in expect:
                for expected, source in expect[seq]:
                    if expected != digest:
                        problem = Problem(
                            seq, ProblemKind.CHECKPOINT_MISMATCH, f"{source} names another hash"
                        )
                        break
                if problem is not None:
                    break
            prev_seq, prev_hash = seq, digest
            count += 1
        self.last = ChainLink(prev_seq, prev_hash)
        self.count = count
        return problem


async def walk_ranges(
    conn: AsyncConnection,
    walker: ChainWalker,
    chunk_size: int,
    *,
    stop: int | None = None,
    each: Callable[[Sequence[Sequence[Any]]], Awaitable[None]] | None = None,
) -> tuple[Problem | None, int]:
    """Walk the rows after ``walker.last`` in ranges (before ``stop``); ``each`` sees sound ones.

    Returns the first problem (a link problem explained as fork or broken
    link) and where the last range read ended.
    """
    problem: Problem | None = None
    range_stop = walker.last.seq + 1
    ranges = iter_ranges(conn, walker.last.seq + 1, chunk_size, stop=stop)
    async with contextlib.aclosing(ranges):
        async for range_stop, rows in ranges:  # noqa: B007  (returned)
            problem = walker.walk(rows)
            if problem is not None:
                break
            if each is not None:
                await each(rows)
    # Only now, with no read in flight on the connection, may it run another query.
    if problem is not None and problem.kind is ProblemKind.BROKEN_LINK:
        problem = await explain_link_problem(conn, problem, walker.start)
    return problem, range_stop


async def verify(
    database: Database,
    keyring: AuditKeyring,
    *,
    against: ChainLink | tuple[int, str] | None = None,
    chunk_size: int = CHUNK,
) -> VerifyResult:
    """Walk the whole chain (from the latest prune checkpoint) and report the first problem.

    ``against`` is a head recorded earlier (``keel audit checkpoint``): the
    chain must still hold exactly that row and extend it, which catches the
    deletion of the newest rows even when the chain head was rewound too.
    """
    anchor = against if against is None or isinstance(against, ChainLink) else ChainLink(*against)
    async with database.unit_of_work() as uow:
        conn = await snapshot_connection(uow)
        result = await _verify(conn, keyring, anchor, chunk_size)
    if result.problem is not None:
        # For whatever watches the logs: a broken chain is an incident, not a return value.
        log_event(
            _log,
            logging.ERROR,
            "audit_chain_broken",
            seq=result.problem.seq,
            problem=result.problem.kind.value,
            verified=result.count,
        )
    return result


async def _verify(
    conn: AsyncConnection, keyring: AuditKeyring, against: ChainLink | None, chunk_size: int
) -> VerifyResult:
    head_row = await read_head(conn)
    if head_row is None:
        raise ConfigurationError("the audit chain head row is missing: run `keel db upgrade`")
    head = ChainLink(*head_row)
    checkpoints = await load_checkpoints(conn)
    for checkpoint in checkpoints:
        reason = checkpoint.problem(keyring)
        if reason is not None:
            detail = f"{checkpoint.kind} checkpoint {checkpoint.id}: {reason}"
            forged = Problem(checkpoint.link.seq, ProblemKind.FORGED_CHECKPOINT, detail)
            return VerifyResult(0, GENESIS, GENESIS, forged)
    start = chain_start(checkpoints)
    expect, unreachable = expectations(checkpoints, start, against)
    if unreachable is not None:
        return VerifyResult(0, start, start, unreachable)

    lowest = await lowest_seq(conn, below=start.seq + 1)
    if lowest is not None:
        detail = f"the chain starts after seq {start.seq}"
        return VerifyResult(0, start, start, Problem(lowest, ProblemKind.PRUNED_RANGE, detail))

    walker = ChainWalker(keyring, start, expect)
    problem, range_stop = await walk_ranges(conn, walker, chunk_size)
    if problem is not None:
        return VerifyResult(walker.count, start, walker.last, problem)
    if walker.last.seq < range_stop - 1:
        # The last range was not full: the rows end there, unless some are missing.
        following = await lowest_seq(conn, from_=range_stop)
        if following is not None:
            detail = f"missing; the next row is seq {following}"
            problem = Problem(walker.last.seq + 1, ProblemKind.GAP, detail)
            return VerifyResult(walker.count, start, walker.last, problem)

    last = walker.last
    problem = _tail_problem(last, head, expect)
    return VerifyResult(walker.count, start, last, problem)


def chain_start(checkpoints: Sequence[Checkpoint]) -> ChainLink:
    """Where verification starts: the latest prune checkpoint, or genesis."""
    prunes = [c.link for c in checkpoints if c.kind == CheckpointKind.PRUNE]
    return max(prunes, key=lambda link: link.seq) if prunes else GENESIS


def expectations(
    checkpoints: Sequence[Checkpoint], start: ChainLink, against: ChainLink | None
) -> tuple[dict[int, list[tuple[str, str]]], Problem | None]:
    """The hashes checkpoints (and ``against``) pin after ``start``, or why they cannot hold."""
    expect: dict[int, list[tuple[str, str]]] = {}
    named = [(c.link, f"{c.kind} checkpoint {c.id}") for c in checkpoints]
    if against is not None:
        if against.seq < start.seq:
            detail = (
                f"--against names seq {against.seq}; the chain was pruned up to seq {start.seq}"
            )
            return expect, Problem(against.seq, ProblemKind.TRUNCATED, detail)
        named.append((against, "--against"))
    for link, source in named:
        if link.seq < start.seq:
            continue  # an older checkpoint of a pruned range
        if link.seq == start.seq:
            if link.hash != start.hash:
                problem = Problem(
                    link.seq, ProblemKind.CHECKPOINT_MISMATCH, f"{source} names another hash"
                )
                return expect, problem
            continue
        expect.setdefault(link.seq, []).append((link.hash, source))
    return expect, None


async def explain_link_problem(
    conn: AsyncConnection, problem: Problem, start: ChainLink
) -> Problem:
    """A walker's link problem as a fork (points at an earlier row) or a broken link."""
    claimed = problem.detail
    earlier = (
        await conn.execute(
            select(_events.c.seq)
            .where(_events.c.hash == claimed, _events.c.seq < problem.seq)
            .order_by(_events.c.seq.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if earlier is None and claimed == start.hash:
        earlier = start.seq
    if earlier is not None:
        detail = f"prev_hash is the hash of seq {earlier}, not of seq {problem.seq - 1}"
        return Problem(problem.seq, ProblemKind.FORK, detail)
    return Problem(
        problem.seq, ProblemKind.BROKEN_LINK, f"prev_hash is not the hash of seq {problem.seq - 1}"
    )


def _tail_problem(last: ChainLink, head: ChainLink, expect: Expectations) -> Problem | None:
    beyond = sorted(seq for seq in expect if seq > last.seq)
    if beyond:
        sources = ", ".join(source for _, source in expect[beyond[0]])
        detail = f"the chain ends at seq {last.seq}; {sources} names seq {beyond[0]}"
        return Problem(last.seq + 1, ProblemKind.TRUNCATED, detail)
    if head.seq > last.seq:
        detail = f"the rows end at seq {last.seq}; the chain head is at seq {head.seq}"
        return Problem(last.seq + 1, ProblemKind.TRUNCATED, detail)
    if head.seq < last.seq:
        detail = f"the rows go on past the chain head at seq {head.seq}"
        return Problem(head.seq + 1, ProblemKind.HEAD_MISMATCH, detail)
    if head.hash != last.hash:
        return Problem(head.seq, ProblemKind.HEAD_MISMATCH, "the chain head names another hash")
    return None
