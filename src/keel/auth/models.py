"""The session tables (created by revision ``0005``; identical on PostgreSQL and SQLite).

- ``sessions``: one row per login per device: a *family* of refresh tokens.
  ``id`` is the ``sid`` claim of every access token issued in it. A session
  ends by ``revoked_at`` (logout, reuse, password change, disable, expiry)
  and never comes back. ``generation`` is the generation of its one live
  refresh token; ``idle_expires_at`` moves with every refresh and never past
  ``absolute_expires_at``.
- ``refresh_tokens``: every refresh token a session ever had, stored only as
  its SHA-256, so a replayed old token is recognised as reuse (SEC-39).
  ``successor_sealed`` holds the successor token encrypted under a key derived
  from *this* token (AES-GCM), so within the grace window a concurrent retry
  with the same token receives the same successor (SEC-40); the database alone
  cannot open it. Cleared once the successor itself is rotated.

Rows go with their user (``ON DELETE CASCADE``) and tokens with their session.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from keel.db import Base

__all__ = ["IP_MAX", "REASON_MAX", "USER_AGENT_MAX", "AuthSession", "RefreshTokenRow"]

IP_MAX = 64
USER_AGENT_MAX = 256
REASON_MAX = 32
_HASH_LENGTH = 64  # hex SHA-256
_SCOPES_MAX = 200


class AuthSession(Base):
    """One login on one device: a refresh-token family."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    scopes: Mapped[str] = mapped_column(String(_SCOPES_MAX))
    generation: Mapped[int]
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]
    idle_expires_at: Mapped[datetime]
    absolute_expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(REASON_MAX))
    source_ip: Mapped[str | None] = mapped_column(String(IP_MAX))
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX))

    def __repr__(self) -> str:
        return f"AuthSession(id={self.id!s}, user_id={self.user_id!s})"


class RefreshTokenRow(Base):
    """One refresh token of a session, as its SHA-256."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(_HASH_LENGTH), unique=True)
    generation: Mapped[int]
    created_at: Mapped[datetime]
    rotated_at: Mapped[datetime | None]
    successor_sealed: Mapped[bytes | None] = mapped_column(LargeBinary(128))

    def __repr__(self) -> str:
        return f"RefreshTokenRow(id={self.id!s}, session_id={self.session_id!s})"
