"""keel.auth (layer L4): access-token authentication against the live record of its subject.

- :class:`TokenAuthenticator` checks a token's signature and claims, its
  subject's current state and its session, and answers an
  :class:`Authentication` or one opaque ``InvalidToken``.
- :class:`SecurityState` reads subject records and session states from the
  nearest tier that is safe (a per-worker near cache, the shared store, the
  database) and writes changes through after they commit.
- :class:`VerifiedTokenCache` verifies each token's signature once per
  process (until ``exp``) instead of once per request.
- :class:`LoginThrottle` limits password checks per account and per
  (account, IP); :class:`RateLimiter` limits attempts per IP and in all.

Framework-free, and independent of ``keel.accounts``: ``keel.api`` wires the
two together (a :data:`RecordLoader` over the accounts side's user row).
"""

from __future__ import annotations

from keel.auth.authenticator import Authentication, TokenAuthenticator
from keel.auth.ratelimit import RateLimiter
from keel.auth.state import SESSION_REVOCATION_TTL, SecurityState, SessionLoader
from keel.auth.subjects import (
    DEFAULT_STATE_TTL,
    UNKNOWN_STATE_TTL,
    UNKNOWN_SUBJECT,
    RecordLoader,
    StateLoader,
    SubjectRecord,
    SubjectState,
)
from keel.auth.throttle import LoginThrottle
from keel.auth.verified import VerifiedTokenCache

__all__ = [
    "DEFAULT_STATE_TTL",
    "SESSION_REVOCATION_TTL",
    "UNKNOWN_STATE_TTL",
    "UNKNOWN_SUBJECT",
    "Authentication",
    "LoginThrottle",
    "RateLimiter",
    "RecordLoader",
    "SecurityState",
    "SessionLoader",
    "StateLoader",
    "SubjectRecord",
    "SubjectState",
    "TokenAuthenticator",
    "VerifiedTokenCache",
]
