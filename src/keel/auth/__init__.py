"""keel.auth (layer L4): access-token authentication against live subject state and a deny-list.

- :class:`TokenAuthenticator` checks a token's signature and claims, its
  subject's current :class:`SubjectState` and the deny-list, and answers an
  :class:`Authentication` or one opaque ``InvalidToken``.
- :class:`VerifiedTokenCache` verifies each token's signature once per
  process (until ``exp``) instead of once per request.
- :func:`publish_subject_state` / :func:`forget_subject` share a subject's
  state through the cache store; :func:`revoke_token` / :func:`revoke_session`
  fill the deny-list.
- :class:`LoginThrottle` limits password checks per account and per
  (account, IP); :class:`RateLimiter` limits attempts per IP and in all.

Framework-free, and independent of ``keel.accounts``: ``keel.api`` wires the
two together (a :data:`StateLoader` over the accounts side's user view).
"""

from __future__ import annotations

from keel.auth.authenticator import Authentication, TokenAuthenticator
from keel.auth.revocation import (
    SESSION_REVOCATION_TTL,
    revoke_session,
    revoke_token,
    revoked_session_key,
    revoked_token_key,
)
from keel.auth.subjects import (
    DEFAULT_STATE_TTL,
    UNKNOWN_STATE_TTL,
    StateLoader,
    SubjectState,
    cached_subject_state,
    forget_subject,
    publish_subject_state,
    subject_key,
)
from keel.auth.throttle import LoginThrottle, RateLimiter
from keel.auth.verified import VerifiedTokenCache

__all__ = [
    "DEFAULT_STATE_TTL",
    "SESSION_REVOCATION_TTL",
    "UNKNOWN_STATE_TTL",
    "Authentication",
    "LoginThrottle",
    "RateLimiter",
    "StateLoader",
    "SubjectState",
    "TokenAuthenticator",
    "VerifiedTokenCache",
    "cached_subject_state",
    "forget_subject",
    "publish_subject_state",
    "revoke_session",
    "revoke_token",
    "revoked_session_key",
    "revoked_token_key",
    "subject_key",
]
