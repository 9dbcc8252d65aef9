"""The access-token deny-list: revoked token ids and sessions, shared through the cache store.

An access token lives at most 15 minutes, so a revocation only has to outlive
the tokens it stops: ``revoked:jti:<jti>`` until that token's ``exp`` (plus the
verification leeway), ``revoked:sid:<sid>`` until every access token of the
session has expired. Keyed by token id, never by a hash of the token (JWT
cheat sheet, SEC-36).

The deny-list lives only in the cache. With Redis and its memory fallback,
a revocation written during an outage is seen only by the process that wrote
it and is not copied to Redis on recovery, and revocations already in Redis
are not seen while it is down. The sessions side keeps its own durable record
(a revoked session never refreshes), so an access token that slips through
lives at most until its ``exp``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from keel._clock import Clock
from keel.cache import Store
from keel.security.tokens import MAX_ACCESS_TTL, MAX_LEEWAY

__all__ = [
    "SESSION_REVOCATION_TTL",
    "revoke_session",
    "revoke_token",
    "revoked_session_key",
    "revoked_token_key",
]

#: How long a session revocation must last: the longest an access token of it can still verify.
SESSION_REVOCATION_TTL: Final = float(MAX_ACCESS_TTL + MAX_LEEWAY)

_REVOKED: Final = b"1"


def revoked_token_key(jti: str) -> str:
    """The deny-list key of one access token."""
    return "revoked:jti:" + jti


def revoked_session_key(session_id: str) -> str:
    """The deny-list key of every access token of one session."""
    return "revoked:sid:" + session_id


def _require_id(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")


async def revoke_token(store: Store, jti: str, expires_at: datetime, *, clock: Clock) -> None:
    """Refuse the access token ``jti`` (which expires at ``expires_at``) from now on.

    The entry outlives the token by the maximum leeway, since verification
    accepts a token that long after its ``exp``. Revoking a token that can no
    longer verify writes nothing.
    """
    _require_id("jti", jti)
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be an aware datetime")
    remaining = (expires_at - clock.now()).total_seconds() + MAX_LEEWAY
    if remaining <= 0:
        return
    await store.set(revoked_token_key(jti), _REVOKED, ttl=remaining)


async def revoke_session(
    store: Store, session_id: str, ttl: float = SESSION_REVOCATION_TTL
) -> None:
    """Refuse every access token of ``session_id`` for ``ttl`` seconds (default: long enough).

    A revoked session must also stop issuing tokens (refresh refuses it);
    ``ttl`` then only has to cover the access tokens already out there.
    """
    _require_id("session_id", session_id)
    await store.set(revoked_session_key(session_id), _REVOKED, ttl=ttl)
