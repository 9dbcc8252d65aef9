"""The accounts tables (revisions ``0003`` and ``0004``; identical on PostgreSQL and SQLite).

- ``users``: one row per account. ``email`` is the address as the user gave
  it (NFKC, trimmed, domain lower-cased); ``email_key`` is the unique lookup
  key (:func:`keel.accounts.email.normalise_email`), so two spellings of one
  address can never make two accounts. ``roles`` holds space-separated role
  names, which travel as access-token scopes. ``tokens_valid_after`` is whole
  seconds: access tokens issued before it are refused (see ``UserState``).
  ``security_version`` (``0006``) is moved on by a trigger with every update
  of the row: caches of the user's state are written at it, so an older
  version never replaces a newer one.
- ``email_verification_tokens``: single-use, expiring proofs that someone
  reads a mailbox. Only the SHA-256 of the token is stored; ``email`` is the
  address the token proves (the account's own, or a new one it is changing
  to). Rows go with their user (``ON DELETE CASCADE``).
- ``password_reset_tokens`` (``0004``): single-use, short-lived proofs that
  someone reads the account's mailbox, redeemed to set a new password. Only
  the SHA-256 is stored; a newer request, a redemption, a password change, a
  disable, an e-mail change and an admin's "end every session" delete the
  user's unused ones, and one created before the user's ``tokens_valid_after``
  is refused (:mod:`keel.accounts.credentials`). Rows go with their user.
- ``mail_outbox`` (``0007``): account mail accepted for sending, written in
  the transaction of the change that causes it (:mod:`keel.accounts.outbox`).
  The body is sealed (AES-256-GCM, ``key_id`` names the key) because it may
  carry a single-use link, and is emptied once the message is sent or given
  up. ``id`` is the message's idempotency key (its ``Message-ID``). No
  foreign key: a notice outlives the account it was about.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from keel.accounts.roles import parse_roles
from keel.db import Base

__all__ = [
    "DISPLAY_NAME_MAX",
    "EMAIL_MAX",
    "TOKEN_HASH_LENGTH",
    "EmailVerificationToken",
    "OutboxMessage",
    "PasswordResetToken",
    "User",
]

#: RFC 5321 §4.5.3.1.3: a path is at most 256 octets, so an address at most 254.
EMAIL_MAX = 320  # column width; the normaliser enforces 254
DISPLAY_NAME_MAX = 100
TOKEN_HASH_LENGTH = 64  # hex SHA-256


class User(Base):
    """An account."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX))
    email_key: Mapped[str] = mapped_column(String(EMAIL_MAX), unique=True)
    email_verified_at: Mapped[datetime | None]
    display_name: Mapped[str | None] = mapped_column(String(DISPLAY_NAME_MAX))
    password_hash: Mapped[str] = mapped_column(Text)
    roles: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool]
    tokens_valid_after: Mapped[datetime]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Maintained by the database (trigger): never set by the application.
    security_version: Mapped[int] = mapped_column(BigInteger, server_default="0")

    def __repr__(self) -> str:
        # Never the hash, never the address: reprs end up in logs and tracebacks.
        return f"User(id={self.id!s})"

    @property
    def role_set(self) -> frozenset[str]:
        return parse_roles(self.roles)


class EmailVerificationToken(Base):
    """One e-mail verification token, stored as its SHA-256."""

    __tablename__ = "email_verification_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), unique=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX))
    email_key: Mapped[str] = mapped_column(String(EMAIL_MAX))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"EmailVerificationToken(id={self.id!s}, user_id={self.user_id!s})"


class PasswordResetToken(Base):
    """One password-reset token, stored as its SHA-256."""

    __tablename__ = "password_reset_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"PasswordResetToken(id={self.id!s}, user_id={self.user_id!s})"


class OutboxMessage(Base):
    """One message in the durable mail outbox: ``pending``, then ``sent`` or ``failed``."""

    __tablename__ = "mail_outbox"
    __table_args__ = (Index("ix_mail_outbox_status_available_at", "status", "available_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(EMAIL_MAX))
    subject: Mapped[str] = mapped_column(String(998))  # RFC 5322 §2.1.1 line limit
    body_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    available_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    claim: Mapped[str | None] = mapped_column(String(32))
    sent_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(64))

    def __repr__(self) -> str:
        # Never the address or the body: reprs end up in logs and tracebacks.
        return f"OutboxMessage(id={self.id!s}, kind={self.kind!r}, status={self.status!r})"
