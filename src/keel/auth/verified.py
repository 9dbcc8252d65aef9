"""``VerifiedTokenCache``: verify each access token's signature once per process, not per request.

A client sends the same access token with every request for up to 15
minutes, and a signature that was valid once is valid for good: the bytes
cannot change. Re-checking it (an Ed25519 verification plus PyJWT's parsing,
≈ 180 µs here) on every request is pure cost, more than a whole bare FastAPI
request. So the verified claims are remembered, keyed by the SHA-256 of the
token (the raw token is never kept), until the token's ``exp``.

Nothing dynamic is cached: the subject's state and the deny-list are still
read on every request by :class:`~keel.auth.TokenAuthenticator`. Of the time
claims only ``exp`` can turn a verified token invalid (``nbf`` and ``iat``
only become more true as time passes), and a cached entry is dropped at
``exp``; the leeway past ``exp`` is left to the wrapped verifier. Only
successes are remembered, so garbage cannot fill the cache; it holds at most
``max_entries`` tokens, least recently used evicted first. The key set is
fixed for the life of a process, so a rotation (which restarts workers)
empties it too.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from keel._clock import Clock
from keel.security.tokens import MAX_TOKEN_LENGTH, AccessClaims, AccessTokenVerifier

__all__ = ["VerifiedTokenCache"]


class VerifiedTokenCache:
    """An ``AccessTokenVerifier`` that remembers what ``verifier`` accepted, until ``exp``."""

    def __init__(
        self, verifier: AccessTokenVerifier, *, clock: Clock, max_entries: int = 10_000
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._verifier = verifier
        self._clock = clock
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, AccessClaims] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid access token; ``InvalidToken`` (from ``verifier``) otherwise."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            return self._verifier.verify(token)  # refuses it; nothing to remember
        key = hashlib.sha256(token.encode("ascii")).digest()
        cached = self._entries.get(key)
        now = self._clock.now()
        if cached is not None:
            if now < cached.expires_at:
                self._entries.move_to_end(key)
                return cached
            del self._entries[key]
        claims = self._verifier.verify(token)
        if now < claims.expires_at:
            self._entries[key] = claims
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return claims
