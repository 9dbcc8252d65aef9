"""Signed tokens: one :class:`TokenKind` of compact JWS, issued and verified per RFC 8725.

Verification (:meth:`SignedTokens.decode`) checks, in this order, and every
failure is the same opaque :class:`InvalidToken` chained from its reason:

1. a ``str`` of at most :data:`MAX_TOKEN_LENGTH` characters, exactly three
   non-empty base64url segments: no JSON or flattened serialization, no JWE,
   no padding, no extra segments (SEC-29);
2. the header, decoded strictly (canonical base64url, UTF-8 JSON object,
   duplicate names refused): ``alg`` equal to the one configured algorithm,
   case-sensitively (SEC-28); ``typ`` the token kind's type, compared
   case-insensitively, with or without ``application/`` (RFC 7515 §4.1.9,
   SEC-32); no ``crit`` (keel understands no extension, RFC 7515 §4.1.11) and
   no ``b64``; a ``kid`` found in the configured :class:`~keel.security.keys.KeySet`,
   which is a dictionary lookup and nothing else. ``jku``, ``x5u``, ``jwk`` and
   ``x5c`` are never read (SEC-33);
3. PyJWT with ``algorithms=[<configured>]`` and the key object the ``kid``
   names: the signature, ``iss`` and ``aud`` (exact), the required claims;
4. the claims against the clock seam: ``exp``, ``iat``, ``nbf`` (if present)
   as integers with the configured leeway (≤ 60 s), a lifetime of at most the
   kind's maximum, non-empty string ``sub``/``jti`` and the kind's own
   claims (SEC-30, SEC-31);
5. a retired key (:mod:`keel.security.key_set`) only for tokens whose ``iat``
   is at most its retirement plus the leeway, and for none once the token
   lifetime plus the leeway has passed since its retirement.

Token kinds (:class:`TokenKind`) each have their own ``typ`` and audience, so a
token of one kind never passes for another (RFC 8725 §3.11/§3.12, SEC-32);
only access tokens (:mod:`keel.security.tokens`) are issued so far. Tokens
never appear in logs, ``repr``s or error messages (SEC-43, SEC-65).
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Final

import jwt

from keel._clock import Clock, SystemClock
from keel._types import JSONValue
from keel.errors import ConfigurationError, Unauthenticated
from keel.security._jws import (
    Rejected,
    b64url_decode,
    check_text,
    json_object,
    numeric_date,
    text_claim,
)
from keel.security.keys import KeySet, SigningKey
from keel.settings import TokenSettings

__all__ = [
    "MAX_LEEWAY",
    "MAX_TOKEN_LENGTH",
    "InvalidToken",
    "IssuedToken",
    "SignedTokens",
    "TokenKind",
]

#: SEC-30: clock skew tolerated on exp/iat/nbf.
MAX_LEEWAY: Final = 60
#: SEC-29: anything longer is refused before it is parsed.
MAX_TOKEN_LENGTH: Final = 8 * 1024
_MAX_KID_LENGTH: Final = 128

_COMPACT_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_REGISTERED_CLAIMS: Final = ("iss", "aud", "sub", "iat", "exp", "jti")


class InvalidToken(Unauthenticated):
    """The token is not valid."""

    code: ClassVar[str] = "invalid_token"


class TokenKind(StrEnum):
    """A kind of signed token; the value is its JOSE ``typ`` (RFC 8725 §3.11)."""

    ACCESS = "at+jwt"  # RFC 9068
    REFRESH = "refresh+jwt"
    MFA_PENDING = "mfa-pending+jwt"
    PASSWORD_RESET = "password-reset+jwt"  # noqa: S105 - a JOSE typ, not a secret
    EMAIL_VERIFICATION = "email-verification+jwt"

    @property
    def typ(self) -> str:
        return self.value

    def audience(self, base: str) -> str:
        """The audience of this kind: ``base`` for access tokens, ``base/<kind>`` otherwise."""
        if self is TokenKind.ACCESS:
            return base
        return f"{base}/{self.name.lower().replace('_', '-')}"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly signed token; ``token`` is kept out of ``repr`` so it never reaches a log."""

    token: str = field(repr=False)
    jti: str
    expires_at: datetime

    def expires_in(self, now: datetime) -> int:
        """Whole seconds left at ``now`` (rounded up, never negative): OAuth's ``expires_in``."""
        return max(0, math.ceil((self.expires_at - now).total_seconds()))


class SignedTokens:
    """Issue and verify one :class:`TokenKind` of compact JWS, signed by a :class:`KeySet`.

    The building block of every kind; each kind should get its own key set
    (RFC 8725 §3.12). ``lifetime`` is what :meth:`encode` gives a token;
    :meth:`decode` refuses any token whose ``exp - iat`` exceeds ``max_lifetime``.
    """

    def __init__(
        self,
        keys: KeySet,
        settings: TokenSettings,
        *,
        kind: TokenKind,
        lifetime: int,
        max_lifetime: int,
        required: Sequence[str] = (),
        clock: Clock | None = None,
    ) -> None:
        if keys.algorithm != settings.algorithm:
            raise ConfigurationError(
                f"the signing keys are {keys.algorithm} but KEEL_JWT_ALGORITHM is "
                f"{settings.algorithm}"
            )
        if not 0 <= settings.leeway <= MAX_LEEWAY:
            raise ConfigurationError(f"KEEL_JWT_LEEWAY must be 0..{MAX_LEEWAY} seconds")
        if not 0 < lifetime <= max_lifetime:
            raise ConfigurationError(f"token lifetime must be 1..{max_lifetime} seconds")
        if not settings.issuer or not settings.audience:
            raise ConfigurationError("KEEL_JWT_ISSUER and KEEL_JWT_AUDIENCE must not be empty")
        self._keys = keys
        self._algorithm = settings.algorithm
        self._issuer = settings.issuer
        self._audience = kind.audience(settings.audience)
        self._leeway = settings.leeway
        self._kind = kind
        self._typs = frozenset({kind.typ, f"application/{kind.typ}"})
        self._lifetime = lifetime
        self._max_lifetime = max_lifetime
        self._required = tuple(required)
        self._clock: Clock = clock or SystemClock()
        # Time claims are checked against the clock seam below, not PyJWT's wall clock.
        self._jwt = jwt.PyJWT(
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_iss": True,
                "verify_aud": True,
                "verify_sub": True,
                "verify_jti": True,
                "require": [*_REGISTERED_CLAIMS, *self._required],
                "enforce_minimum_key_length": True,
            }
        )

    @property
    def keys(self) -> KeySet:
        return self._keys

    @property
    def kind(self) -> TokenKind:
        return self._kind

    def encode(self, *, subject: str, claims: Mapping[str, JSONValue]) -> IssuedToken:
        """Sign a token for ``subject`` carrying the registered claims plus ``claims``."""
        check_text("subject", subject)
        clashing = set(claims) & set(_REGISTERED_CLAIMS)
        if clashing:
            raise ValueError(f"registered claims are set by keel: {sorted(clashing)}")
        issued_at = int(self._clock.now().timestamp())
        expires_at = issued_at + self._lifetime
        jti = secrets.token_urlsafe(16)  # 128 bits from the CSPRNG
        payload: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "iat": issued_at,
            "exp": expires_at,
            "jti": jti,
            **claims,
        }
        key = self._keys.current
        token = self._jwt.encode(
            payload,
            key.private_material,
            algorithm=self._algorithm,
            headers={"typ": self._kind.typ, "kid": key.kid},
        )
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError("the token would exceed MAX_TOKEN_LENGTH")
        return IssuedToken(token, jti, datetime.fromtimestamp(expires_at, UTC))

    def decode(self, token: object) -> dict[str, Any]:
        """The verified claims of ``token``; ``InvalidToken`` for anything else."""
        try:
            return self._decode(token)
        except (
            jwt.PyJWTError,
            ValueError,  # includes Rejected, JSONDecodeError, UnicodeDecodeError
            TypeError,
            OverflowError,
            RecursionError,
        ) as exc:
            raise InvalidToken("invalid token") from exc

    def _decode(self, token: object) -> dict[str, Any]:
        if not isinstance(token, str):
            raise Rejected("not a string")
        if len(token) > MAX_TOKEN_LENGTH:
            raise Rejected("too long")
        if _COMPACT_JWS.fullmatch(token) is None:
            raise Rejected("not a compact JWS")
        header_segment, payload_segment, _ = token.split(".")
        header = json_object(b64url_decode(header_segment))
        key = self._key_for(header)
        self._jwt.decode(
            token,
            key.public_material,
            algorithms=[self._algorithm],
            issuer=self._issuer,
            audience=self._audience,
        )
        # PyJWT verified the signature over these exact bytes; parse them strictly ourselves.
        claims = json_object(b64url_decode(payload_segment))
        self._check_claims(claims)
        accepted = self._keys.accepts(
            key,
            issued_at=claims["iat"],
            now=self._clock.now().timestamp(),
            leeway=self._leeway,
            keep_for=self._lifetime + self._leeway,
        )
        if not accepted:
            raise Rejected("signed by a retired key after its retirement, or a dropped one")
        return claims

    def _key_for(self, header: Mapping[str, Any]) -> SigningKey:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg != self._algorithm:
            raise Rejected("alg")  # RFC 8725 §3.1: one algorithm, compared exactly
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in self._typs:
            raise Rejected("typ")
        if "crit" in header or "b64" in header:
            raise Rejected("crit")  # RFC 7515 §4.1.11: no extension is understood
        kid = header.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID_LENGTH:
            raise Rejected("kid")
        key = self._keys.find(kid)  # an in-memory mapping; a kid is never a path or query
        if key is None:
            raise Rejected("unknown kid")
        return key

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        if claims.get("iss") != self._issuer:
            raise Rejected("iss")
        aud = claims.get("aud")
        if isinstance(aud, list):
            if self._audience not in aud or not all(isinstance(a, str) for a in aud):
                raise Rejected("aud")
        elif aud != self._audience:
            raise Rejected("aud")
        text_claim(claims, "sub")
        text_claim(claims, "jti")
        for name in self._required:
            text_claim(claims, name)
        issued_at = numeric_date(claims, "iat")
        expires_at = numeric_date(claims, "exp")
        if not 0 < expires_at - issued_at <= self._max_lifetime:
            raise Rejected("lifetime")
        now = self._clock.now().timestamp()
        if expires_at <= now - self._leeway:
            raise Rejected("expired")
        if issued_at > now + self._leeway:
            raise Rejected("issued in the future")
        if "nbf" in claims and numeric_date(claims, "nbf") > now + self._leeway:
            raise Rejected("not yet valid")
