"""Shared by the account-service tests: a password, a verified account made through the mail,
and the audit rows of one action."""

from __future__ import annotations

from sqlalchemy import select

from keel.accounts import NO_ORIGIN, AccountService, FileMailer
from keel.audit.models import AuditEventRow
from keel.db import Database

__all__ = ["PASSWORD", "_token", "_verified", "audit_rows"]

PASSWORD = "correct horse battery staple 42"


async def _token(service: AccountService, to: str) -> str:
    outbox = service.outbox
    assert outbox is not None
    await outbox.drain()
    mailer = outbox.mailer
    assert isinstance(mailer, FileMailer)
    for message in reversed(mailer.read()):
        if message["kind"] == "verify_email" and message["to"] == to:
            line = next(line for line in message["body"].splitlines() if "#token=" in line)
            return str(line.rsplit("#token=", 1)[1])
    raise AssertionError("no link")


async def _verified(service: AccountService, email: str) -> str:
    await service.register(email, PASSWORD, None, NO_ORIGIN)
    await service.verify_email(await _token(service, email), NO_ORIGIN)
    return (await service.authenticate(email, PASSWORD, NO_ORIGIN)).user_id


async def audit_rows(database: Database, action: str) -> list[AuditEventRow]:
    """The audit rows of ``action``, oldest first."""
    async with database.unit_of_work() as uow:
        query = select(AuditEventRow).where(AuditEventRow.action == action)
        return list((await uow.session.execute(query.order_by(AuditEventRow.seq))).scalars())
