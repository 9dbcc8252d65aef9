"""Pruning spent one-time tokens: e-mail verification and password reset.

A token row is kept ``retention`` seconds after it expired or was used, then
deleted. Only SHA-256 digests are stored, so nothing secret lingers either way;
pruning keeps the tables (and their unique indexes) small.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_

from keel.accounts.models import EmailVerificationToken, PasswordResetToken
from keel.db import Database
from keel.db.prune import PruneResult, prune_rows

__all__ = ["prune_tokens"]


async def prune_tokens(
    database: Database, *, now: datetime, retention: int, batch: int, deadline: float
) -> dict[str, PruneResult]:
    """Delete verification and reset tokens spent more than ``retention`` seconds before ``now``."""
    cutoff = now - timedelta(seconds=retention)
    results: dict[str, PruneResult] = {}
    for name, model in (
        ("email_verification_tokens", EmailVerificationToken),
        ("password_reset_tokens", PasswordResetToken),
    ):
        spent = or_(model.expires_at < cutoff, model.used_at < cutoff)
        results[name] = await prune_rows(database, model, spent, batch=batch, deadline=deadline)
    return results
