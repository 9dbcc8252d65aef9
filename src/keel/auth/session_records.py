"""What sessions and refresh tokens are made of, shared by ``sessions`` and ``rotation``.

The reasons a session ends (``sessions.revoked_reason``), the refusals a client
sees, the values returned to the API, and the few row and audit-event builders
both the session service and the refresh rotation use.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from keel._types import Origin
from keel.audit import Action, ActorType, AuditEvent, AuditTrail, Result
from keel.auth.models import AuthSession, RefreshTokenRow
from keel.auth.refresh import token_hash
from keel.errors import Unauthenticated
from keel.security.tokens import IssuedToken

__all__ = [
    "REASON_ADMIN",
    "REASON_CREDENTIALS",
    "REASON_EXPIRED",
    "REASON_LOGOUT",
    "REASON_REUSE",
    "REASON_REVOKED",
    "REASON_SUBJECT",
    "InvalidRefreshToken",
    "RefreshScopeNotGranted",
    "Refreshed",
    "SessionInfo",
    "as_uuid",
    "clip",
    "end_session",
    "scope_set",
    "session_event",
    "token_row",
]

# Why a session ended (``sessions.revoked_reason``).
REASON_LOGOUT: Final = "logout"
REASON_REVOKED: Final = "revoked_by_user"
REASON_ADMIN: Final = "revoked_by_admin"
REASON_REUSE: Final = "token_reuse"
REASON_EXPIRED: Final = "expired"
REASON_SUBJECT: Final = "subject_inactive"
REASON_CREDENTIALS: Final = "credentials_changed"


class InvalidRefreshToken(Unauthenticated):
    """The refresh token cannot be used (unknown, rotated, revoked or expired)."""

    code = "invalid_refresh_token"


class RefreshScopeNotGranted(Unauthenticated):
    """A refresh asked for a scope the session does not hold."""

    code = "invalid_scope"


@dataclass(frozen=True, slots=True)
class Refreshed:
    """A successful refresh: a new access token and the session's live refresh token."""

    access_token: IssuedToken
    refresh_token: str = field(repr=False)
    session_id: str
    scopes: frozenset[str]
    expires_in: int


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session as its owner sees it."""

    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    source_ip: str | None
    user_agent: str | None


def clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else None


def as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None


def scope_set(scopes: str) -> frozenset[str]:
    return frozenset(scopes.split())


def end_session(session: AuthSession, reason: str, now: datetime) -> None:
    session.revoked_at = now
    session.revoked_reason = reason


def token_row(session_id: uuid.UUID, token: str, generation: int, now: datetime) -> RefreshTokenRow:
    """A stored refresh token: its hash only."""
    return RefreshTokenRow(
        id=uuid.uuid4(),
        session_id=session_id,
        token_hash=token_hash(token),
        generation=generation,
        created_at=now,
        rotated_at=None,
        successor_sealed=None,
    )


def session_event(
    audit: AuditTrail,
    action: Action,
    result: Result,
    session: AuthSession,
    origin: Origin,
    *,
    actor_type: ActorType = ActorType.USER,
    details: dict[str, object] | None = None,
) -> AuditEvent:
    """An audit event about ``session``, acted by its owner unless ``actor_type`` says not."""
    return audit.event(
        action,
        result,
        actor_type=actor_type,
        actor_id=str(session.user_id) if actor_type is ActorType.USER else None,
        target_type="session",
        target_id=str(session.id),
        origin=origin,
        details=details,
    )
