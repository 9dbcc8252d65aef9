"""Pruning spent one-time tokens (e-mail verification, password reset) and finished mail.

A token row is kept ``retention`` seconds after it expired or was used, then
deleted. Only SHA-256 digests are stored, so nothing secret lingers either way;
pruning keeps the tables (and their unique indexes) small. An outbox row that
was sent or given up (its body already emptied) goes ``retention`` seconds
after that, so no recipient address outlives the retention; a give-up stays
in the audit trail (``mail_send_fail``). A pending row is never pruned.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_

from keel.accounts.models import EmailVerificationToken, OutboxMessage, PasswordResetToken
from keel.accounts.outbox_rows import FAILED, SENT
from keel.db import Database
from keel.db.prune import PruneResult, prune_rows

__all__ = ["prune_tokens"]


async def prune_tokens(
    database: Database, *, now: datetime, retention: int, batch: int, deadline: float
) -> dict[str, PruneResult]:
    """Delete tokens spent, and mail sent or given up, over ``retention`` seconds before ``now``."""
    cutoff = now - timedelta(seconds=retention)
    results: dict[str, PruneResult] = {}
    for name, model in (
        ("email_verification_tokens", EmailVerificationToken),
        ("password_reset_tokens", PasswordResetToken),
    ):
        spent = or_(model.expires_at < cutoff, model.used_at < cutoff)
        results[name] = await prune_rows(database, model, spent, batch=batch, deadline=deadline)
    done = or_(
        and_(OutboxMessage.status == SENT, OutboxMessage.sent_at < cutoff),
        and_(OutboxMessage.status == FAILED, OutboxMessage.failed_at < cutoff),
    )
    results["mail_outbox"] = await prune_rows(
        database, OutboxMessage, done, batch=batch, deadline=deadline
    )
    return results
