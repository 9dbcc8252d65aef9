"""Pruning spent one-time tokens (e-mail verification, password reset) and sent mail.

A token row is kept ``retention`` seconds after it expired or was used, then
deleted. Only SHA-256 digests are stored, so nothing secret lingers either way;
pruning keeps the tables (and their unique indexes) small. A sent outbox row
(its body already emptied) goes ``retention`` seconds after it was sent;
failed ones stay, for an operator to see.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_

from keel.accounts.models import EmailVerificationToken, OutboxMessage, PasswordResetToken
from keel.accounts.outbox_rows import SENT
from keel.db import Database
from keel.db.prune import PruneResult, prune_rows

__all__ = ["prune_tokens"]


async def prune_tokens(
    database: Database, *, now: datetime, retention: int, batch: int, deadline: float
) -> dict[str, PruneResult]:
    """Delete tokens spent, and mail sent, more than ``retention`` seconds before ``now``."""
    cutoff = now - timedelta(seconds=retention)
    results: dict[str, PruneResult] = {}
    for name, model in (
        ("email_verification_tokens", EmailVerificationToken),
        ("password_reset_tokens", PasswordResetToken),
    ):
        spent = or_(model.expires_at < cutoff, model.used_at < cutoff)
        results[name] = await prune_rows(database, model, spent, batch=batch, deadline=deadline)
    sent = and_(OutboxMessage.status == SENT, OutboxMessage.sent_at < cutoff)
    results["mail_outbox"] = await prune_rows(
        database, OutboxMessage, sent, batch=batch, deadline=deadline
    )
    return results
