"""Shared by the account-service tests: a password, and a verified account made through the mail."""

from __future__ import annotations

from keel.accounts import NO_ORIGIN, AccountService, FileMailer

__all__ = ["PASSWORD", "_token", "_verified"]

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
