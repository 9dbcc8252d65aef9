"""Pruning ended sessions: revoked, idle-expired or past their absolute lifetime.

A session row is kept ``retention`` seconds after it ended (for ``GET
/sessions`` history and investigations), then deleted with its refresh
tokens (``ON DELETE CASCADE``). A replayed refresh token of a pruned session
is simply unknown: ``invalid_grant``, as for any dead session.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_

from keel.auth.models import AuthSession
from keel.db import Database
from keel.db.prune import PruneResult, prune_rows

__all__ = ["prune_sessions"]


async def prune_sessions(
    database: Database, *, now: datetime, retention: int, batch: int, deadline: float
) -> PruneResult:
    """Delete sessions that ended more than ``retention`` seconds before ``now``."""
    cutoff = now - timedelta(seconds=retention)
    ended = or_(
        AuthSession.revoked_at < cutoff,
        AuthSession.idle_expires_at < cutoff,
        AuthSession.absolute_expires_at < cutoff,
    )
    return await prune_rows(database, AuthSession, ended, batch=batch, deadline=deadline)
