"""Verifying a prune archive: the file `keel audit prune` wrote, against the sealed checkpoints.

An archive holds the pruned events in export form, one JSON object per line,
each with its ``prev_hash`` and ``hash``. Verification re-seals every event
with the audit keyring (so a line edited by someone without the key fails),
checks that each links to the one before (no line removed, inserted or
reordered), and anchors both ends in sealed checkpoints that stayed in the
database: the last event must be exactly a *prune* checkpoint (the one its
prune left behind), and the first event must follow the previous prune
checkpoint (or the chain's genesis). An archive that verifies is therefore the
complete, unaltered stretch of chain that the database vouches for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.audit.canonical import canonical_json
from keel.audit.chain import GENESIS, AuditKeyring, ChainLink
from keel.audit.checkpoints import Checkpoint, CheckpointKind, load_checkpoints
from keel.audit.verify import ChainWalker, Problem, ProblemKind
from keel.audit.writer import CHAIN_FIELDS
from keel.db import Database

__all__ = ["ArchiveResult", "verify_archive"]

_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """What ``verify_archive`` found."""

    count: int
    first: int | None
    last: ChainLink | None
    checkpoint: Checkpoint | None
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        if self.problem is not None:
            return str(self.problem)
        assert self.checkpoint is not None
        assert self.last is not None
        return (
            f"OK archive of {self.count} events (seq {self.first}..{self.last.seq}), "
            f"ends at prune checkpoint {self.checkpoint.id}"
        )


class _BadLine(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def _rows(path: Path) -> Iterator[tuple[Any, ...]]:
    with path.open(encoding="ascii") as handle:
        for number, text in enumerate(handle, start=1):
            try:
                record = json.loads(text)
                if not isinstance(record, dict) or set(record) != set(CHAIN_FIELDS):
                    raise ValueError("not an archived event")
                if type(record["seq"]) is not int or not isinstance(record["details"], dict):
                    raise ValueError("not an archived event")
                details = canonical_json(record["details"]).decode("utf-8")
            except (ValueError, TypeError) as exc:
                raise _BadLine(number, str(exc)) from None
            yield tuple(details if name == "details" else record[name] for name in CHAIN_FIELDS)


def _first_link(path: Path) -> ChainLink | None:
    for row in _rows(path):
        return ChainLink(int(row[0]) - 1, str(row[13]))
    return None


async def verify_archive(
    database: Database, keyring: AuditKeyring, path: str | Path
) -> ArchiveResult:
    """Check ``path`` line by line and against the prune checkpoints; see the module docstring.

    Raises ``OSError`` when the file cannot be read.
    """
    archive = Path(path)
    async with database.unit_of_work() as uow:
        checkpoints = await load_checkpoints(await uow.session.connection())
    try:
        start = _first_link(archive)
        if start is None:
            return ArchiveResult(0, None, None, None, Problem(0, ProblemKind.GAP, "empty archive"))
        problem = _start_problem(start, checkpoints, keyring)
        walker = ChainWalker(keyring, start)
        if problem is None:
            chunk: list[Sequence[Any]] = []
            for row in _rows(archive):
                chunk.append(row)
                if len(chunk) == _CHUNK:
                    problem = walker.walk(chunk)
                    chunk = []
                    if problem is not None:
                        break
            if problem is None and chunk:
                problem = walker.walk(chunk)
    except _BadLine as bad:
        detail = f"line {bad.line}: {bad.reason}"
        return ArchiveResult(0, None, None, None, Problem(0, ProblemKind.HASH_MISMATCH, detail))
    first = start.seq + 1
    if problem is not None:
        return ArchiveResult(walker.count, first, walker.last, None, problem)
    end = _end_checkpoint(walker.last, checkpoints, keyring)
    if end is None:
        detail = "no sealed prune checkpoint names the archive's last event"
        problem = Problem(walker.last.seq, ProblemKind.CHECKPOINT_MISMATCH, detail)
    return ArchiveResult(walker.count, first, walker.last, end, problem)


def _sound_prunes(checkpoints: Sequence[Checkpoint], keyring: AuditKeyring) -> list[Checkpoint]:
    return [c for c in checkpoints if c.kind == CheckpointKind.PRUNE and c.problem(keyring) is None]


def _start_problem(
    start: ChainLink, checkpoints: Sequence[Checkpoint], keyring: AuditKeyring
) -> Problem | None:
    """The archive must begin at genesis or right after a sealed prune checkpoint."""
    if start == GENESIS:
        return None
    for checkpoint in _sound_prunes(checkpoints, keyring):
        if checkpoint.link == start:
            return None
    detail = f"the first event does not follow genesis or a prune checkpoint at seq {start.seq}"
    return Problem(start.seq + 1, ProblemKind.BROKEN_LINK, detail)


def _end_checkpoint(
    last: ChainLink, checkpoints: Sequence[Checkpoint], keyring: AuditKeyring
) -> Checkpoint | None:
    for checkpoint in _sound_prunes(checkpoints, keyring):
        if checkpoint.link == last:
            return checkpoint
    return None
