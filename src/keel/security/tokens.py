"""Access tokens: keel's RFC 9068 profile of :class:`~keel.security.signed_tokens.SignedTokens`.

An access token is a compact JWS::

    header  {"alg": <configured>, "kid": <key id>, "typ": "at+jwt"}
    claims  {"iss", "aud", "sub", "iat", "exp", "jti", "sid", "scope"}   nothing else (SEC-35)

It lives at most :data:`MAX_ACCESS_TTL` seconds; ``scope`` is a space-separated
list of RFC 6749 scope-tokens. :class:`AccessTokens` verifies one as
:meth:`SignedTokens.decode <keel.security.signed_tokens.SignedTokens.decode>`
does (the checks are listed in :mod:`keel.security.signed_tokens`), then its
``scope``; every failure is the one opaque :class:`InvalidToken`.

The token types every kind shares (:class:`InvalidToken`, :class:`IssuedToken`,
:class:`TokenKind`, :class:`SignedTokens` and the limits) are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar, Final, Protocol

from keel._clock import Clock
from keel.errors import ConfigurationError
from keel.security._jws import Rejected, check_text
from keel.security.keys import KeySet
from keel.security.signed_tokens import (
    MAX_LEEWAY,
    MAX_TOKEN_LENGTH,
    InvalidToken,
    IssuedToken,
    SignedTokens,
    TokenKind,
)
from keel.settings import TokenSettings

__all__ = [
    "MAX_ACCESS_TTL",
    "MAX_LEEWAY",
    "MAX_TOKEN_LENGTH",
    "AccessClaims",
    "AccessTokenIssuer",
    "AccessTokenVerifier",
    "AccessTokens",
    "InvalidToken",
    "IssuedToken",
    "SignedTokens",
    "TokenKind",
]

#: SEC-35: access tokens live at most 15 minutes.
MAX_ACCESS_TTL: Final = 900
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says."""

    subject: str
    session_id: str
    scopes: frozenset[str]
    jti: str
    issued_at: datetime
    expires_at: datetime


class AccessTokenIssuer(Protocol):
    """Signs access tokens."""

    def issue(self, *, subject: str, session_id: str, scopes: Sequence[str]) -> IssuedToken: ...


class AccessTokenVerifier(Protocol):
    """Verifies access tokens; raises ``InvalidToken`` for anything not valid."""

    def verify(self, token: str) -> AccessClaims: ...


class AccessTokens:
    """Issue and verify access tokens (``typ`` at+jwt, ≤ 15 minutes, allowlisted claims)."""

    CLAIMS: ClassVar[frozenset[str]] = frozenset(
        {"iss", "aud", "sub", "iat", "exp", "jti", "sid", "scope"}
    )

    def __init__(
        self, keys: KeySet, settings: TokenSettings, *, clock: Clock | None = None
    ) -> None:
        if not 0 < settings.access_ttl <= MAX_ACCESS_TTL:
            raise ConfigurationError(f"KEEL_ACCESS_TOKEN_TTL must be 1..{MAX_ACCESS_TTL} seconds")
        # Verification allows the hard maximum, not the configured lifetime, so lowering
        # the setting during a rolling deploy does not log out tokens already issued.
        self._tokens = SignedTokens(
            keys,
            settings,
            kind=TokenKind.ACCESS,
            lifetime=settings.access_ttl,
            max_lifetime=MAX_ACCESS_TTL,
            required=("sid",),
            clock=clock,
        )

    @property
    def keys(self) -> KeySet:
        return self._tokens.keys

    def issue(self, *, subject: str, session_id: str, scopes: Sequence[str]) -> IssuedToken:
        """Sign an access token for ``subject`` in session ``session_id`` with ``scopes``."""
        check_text("session_id", session_id)
        if isinstance(scopes, str):
            raise TypeError("scopes is a sequence of scope names, not a string")
        for scope in scopes:
            if not isinstance(scope, str) or _SCOPE_TOKEN.fullmatch(scope) is None:
                raise ValueError("a scope is a non-empty RFC 6749 scope-token")
        scope = " ".join(sorted(set(scopes)))
        return self._tokens.encode(subject=subject, claims={"sid": session_id, "scope": scope})

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid access token; ``InvalidToken`` (one opaque error) otherwise."""
        claims = self._tokens.decode(token)
        try:
            scopes = _parse_scope(claims.get("scope", ""))
        except Rejected as exc:
            raise InvalidToken("invalid token") from exc
        return AccessClaims(
            subject=claims["sub"],
            session_id=claims["sid"],
            scopes=scopes,
            jti=claims["jti"],
            issued_at=datetime.fromtimestamp(claims["iat"], UTC),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        )


def _parse_scope(value: object) -> frozenset[str]:
    if not isinstance(value, str):
        raise Rejected("scope")
    if not value:
        return frozenset()
    scopes = value.split(" ")
    if not all(_SCOPE_TOKEN.fullmatch(scope) for scope in scopes):
        raise Rejected("scope")
    return frozenset(scopes)
