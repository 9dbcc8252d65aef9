"""Housekeeping: ended sessions and spent one-time tokens pruned on a schedule, by one instance.

Every instance runs the loop; each round, the one that takes the shared
store's lock (``add`` with a TTL just under the interval) prunes, the others
skip. Without Redis the lock is the machine's, so each machine prunes its own
database's rows once per interval (pruning the same rows twice is harmless:
each batch deletes what it selected). A round is bounded by
``KEEL_HOUSEKEEPING_BUDGET`` seconds; what it leaves is taken by the next.
A failure (database or cache down) is logged and the loop carries on.
``keel db prune`` runs one round by hand, without the lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from dataclasses import dataclass

from keel._clock import Clock
from keel._logging import event
from keel.accounts.housekeeping import prune_tokens
from keel.auth.housekeeping import prune_sessions
from keel.cache import Store
from keel.db import Database
from keel.db.prune import PruneResult

__all__ = ["LOCK_KEY", "Housekeeper", "HousekeepingReport"]

_log = logging.getLogger("keel.housekeeping")

#: The shared store's key whose holder prunes this round.
LOCK_KEY = "housekeeping:lock"
_BATCH = 500


@dataclass(frozen=True, slots=True)
class HousekeepingReport:
    """Rows deleted per table in one round, and whether every table was finished."""

    results: dict[str, PruneResult]

    @property
    def complete(self) -> bool:
        return all(result.complete for result in self.results.values())

    @property
    def deleted(self) -> dict[str, int]:
        return {name: result.deleted for name, result in self.results.items()}


class Housekeeper:
    """Prunes what ended more than ``retention`` seconds ago, ``budget`` seconds per round."""

    def __init__(
        self,
        database: Database,
        store: Store,
        clock: Clock,
        *,
        retention: int,
        budget: float,
        interval: float,
        batch: int = _BATCH,
    ) -> None:
        self._database = database
        self._store = store
        self._clock = clock
        self._retention = retention
        self._budget = budget
        self._interval = interval
        self._batch = batch

    async def run_once(self) -> HousekeepingReport:
        """One bounded round over every table (no lock: for ``keel db prune`` and the loop)."""
        now = self._clock.now()
        deadline = time.monotonic() + self._budget
        results = {
            "sessions": await prune_sessions(
                self._database,
                now=now,
                retention=self._retention,
                batch=self._batch,
                deadline=deadline,
            )
        }
        results.update(
            await prune_tokens(
                self._database,
                now=now,
                retention=self._retention,
                batch=self._batch,
                deadline=deadline,
            )
        )
        return HousekeepingReport(results)

    async def round(self) -> HousekeepingReport | None:
        """Prune if this instance takes the round's lock; ``None`` when another has it."""
        holder = f"{os.getpid()}".encode()
        if not await self._store.add(LOCK_KEY, holder, ttl=max(self._interval * 0.9, 1.0)):
            return None
        report = await self.run_once()
        event(
            _log,
            logging.INFO,
            "housekeeping_pruned",
            complete=report.complete,
            **report.deleted,
        )
        return report

    async def run_forever(self) -> None:
        """The supervisor's service: a round every interval, the first at a random offset."""
        # Instances do not start in step (not a secret: S311 does not apply).
        delay = random.uniform(0, min(self._interval, 60.0))  # noqa: S311
        while True:
            await asyncio.sleep(delay)
            delay = self._interval
            try:
                await self.round()
            except Exception as exc:  # noqa: BLE001 - a failed round is logged, the next retries
                event(_log, logging.WARNING, "housekeeping_failed", error=type(exc).__name__)
