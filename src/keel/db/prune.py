"""Deleting old rows in bounded batches: one short transaction per batch, a time budget per run.

Used by the housekeeping of sessions and one-time tokens. Each batch selects
at most ``batch`` primary keys matching the condition and deletes exactly
those, in its own transaction, so a prune never holds a lock for long and a
run interrupted anywhere leaves only whole batches done. The budget is
checked between batches: a run stops early (``complete`` false) rather than
run on, and the next run carries on where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, select

from keel.db.engine import Database

__all__ = ["PruneResult", "prune_rows"]


@dataclass(frozen=True, slots=True)
class PruneResult:
    """How many rows went, and whether everything that matched went."""

    deleted: int
    complete: bool


async def prune_rows(
    database: Database,
    model: Any,
    condition: ColumnElement[bool],
    *,
    batch: int,
    deadline: float,
) -> PruneResult:
    """Delete ``model`` rows matching ``condition``, ``batch`` at a time, until ``deadline``.

    ``deadline`` is a ``time.monotonic()`` value; at least one batch runs.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    key = model.id
    deleted = 0
    while True:
        async with database.unit_of_work() as uow:
            ids = list(
                (await uow.session.execute(select(key).where(condition).limit(batch))).scalars()
            )
            if ids:
                await uow.session.execute(delete(model).where(key.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch:
            return PruneResult(deleted, complete=True)
        if time.monotonic() >= deadline:
            return PruneResult(deleted, complete=False)
