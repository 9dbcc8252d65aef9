"""``TokenAuthenticator``: an access token in, an :class:`Authentication` out, or one opaque error.

Framework-free: the HTTP side (``keel.api.bearer``) finds the token in the
request and hands it here with the store to use. For every request:

1. the signature and claims (``AccessTokens.verify``: algorithm, ``kid``,
   ``typ``, ``iss``/``aud``, ``exp``/``iat``/``nbf``; SEC-28..SEC-33), best
   behind a :class:`~keel.auth.VerifiedTokenCache` so a token's signature is
   computed once per process rather than once per request;
2. the subject's current :class:`~keel.auth.subjects.SubjectState` from the
   cache (the ``StateLoader``, i.e. the database, only on a miss): unknown or
   disabled subjects are refused, and so are tokens issued before the
   subject's ``tokens_valid_after`` (SEC-36);
3. the deny-list: the token's ``jti`` and its session ``sid`` (SEC-36);
4. the scopes: the token's, intersected with the ones the subject holds now,
   so a demoted admin's earlier token loses ``admin`` on the next request.

Steps 2 and 3 read the cache in one ``Store.get_many`` (one Redis ``MGET``):
the subject state, the ``jti`` entry and the ``sid`` entry, plus any keys the
caller asks to ``prefetch`` for the subject (the route's own cached data), so
a warm request costs one cache round trip in all.

Every refusal is the same :class:`~keel.security.tokens.InvalidToken`, chained
from its reason (STYLE habit 9); the reason is logged, the token never is
(SEC-43, SEC-65). A cache or database that does not answer is not a
credential failure: its ``DependencyUnavailable`` propagates (503), so clients
do not throw away good tokens during an outage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Final, TypeAlias

from keel._logging import event
from keel.auth.revocation import revoked_session_key, revoked_token_key
from keel.auth.subjects import DEFAULT_STATE_TTL, StateLoader, subject_key, subject_state_from
from keel.cache import Store
from keel.security.tokens import AccessClaims, AccessTokenVerifier, InvalidToken

__all__ = ["Authentication", "Prefetch", "TokenAuthenticator"]

#: The extra cache keys to read for a subject in the same round trip as its checks.
Prefetch: TypeAlias = Callable[[str], Sequence[str]]

_NOTHING: Final[Mapping[str, bytes | None]] = MappingProxyType({})

_log = logging.getLogger("keel.auth")

# The reasons a well-signed token is refused; logged, never sent to the client.
_UNKNOWN_SUBJECT: Final = "unknown_subject"
_SUBJECT_DISABLED: Final = "subject_disabled"
_ISSUED_BEFORE_VALID_AFTER: Final = "issued_before_valid_after"
_JTI_REVOKED: Final = "jti_revoked"
_SID_REVOKED: Final = "sid_revoked"


class _Refused(ValueError):
    """Why a well-signed token was refused; only ever the ``__cause__`` of an ``InvalidToken``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Authentication:
    """A caller authenticated by an access token: who, in which session, allowed what."""

    subject: str
    session_id: str
    token_id: str
    scopes: frozenset[str]
    issued_at: datetime
    expires_at: datetime
    #: What the store held under each prefetched key when the checks were read.
    prefetched: Mapping[str, bytes | None] = field(default_factory=lambda: _NOTHING, compare=False)


class TokenAuthenticator:
    """Check access tokens against their signature, their subject's state and the deny-list.

    ``loader`` reads a subject's state from the source of truth when the cache
    does not have it; ``state_ttl`` is how long that answer is cached.
    """

    def __init__(
        self,
        verifier: AccessTokenVerifier,
        loader: StateLoader,
        *,
        state_ttl: float = DEFAULT_STATE_TTL,
    ) -> None:
        if not (math.isfinite(state_ttl) and state_ttl > 0):
            raise ValueError("state_ttl must be a positive number of seconds")
        self._verifier = verifier
        self._loader = loader
        self._state_ttl = state_ttl

    async def authenticate(
        self, token: str, store: Store, *, prefetch: Prefetch | None = None
    ) -> Authentication:
        """The authentication ``token`` carries; ``InvalidToken`` for anything not acceptable.

        ``prefetch(subject)`` names cache keys to read along with the checks;
        their values come back in ``Authentication.prefetched`` (read only for
        a well-signed token, never for a refused one's caller).
        """
        try:
            claims = self._verifier.verify(token)
        except InvalidToken as exc:
            cause = exc.__cause__
            event(
                _log,
                logging.DEBUG,
                "access_token_refused",
                reason="invalid",
                cause=type(cause).__name__ if cause is not None else None,
            )
            raise
        extra = tuple(prefetch(claims.subject)) if prefetch is not None else ()
        try:
            scopes, prefetched = await self._admit(claims, store, extra)
        except _Refused as exc:
            # A well-signed token refused: worth seeing (a stolen token used after logout).
            event(
                _log,
                logging.INFO,
                "access_token_refused",
                reason=exc.reason,
                subject=claims.subject,
            )
            raise InvalidToken("invalid token") from exc
        return Authentication(
            subject=claims.subject,
            session_id=claims.session_id,
            token_id=claims.jti,
            scopes=scopes,
            issued_at=claims.issued_at,
            expires_at=claims.expires_at,
            prefetched=prefetched,
        )

    async def _admit(
        self, claims: AccessClaims, store: Store, extra: tuple[str, ...]
    ) -> tuple[frozenset[str], Mapping[str, bytes | None]]:
        # One round trip for every cache read a warm request needs.
        keys = [
            subject_key(claims.subject),
            revoked_token_key(claims.jti),
            revoked_session_key(claims.session_id),
            *extra,
        ]
        raw_state, jti_entry, sid_entry, *values = await store.get_many(keys)
        state = await subject_state_from(
            store, claims.subject, raw_state, self._loader, ttl=self._state_ttl
        )
        if state is None:
            raise _Refused(_UNKNOWN_SUBJECT)
        if not state.active:
            raise _Refused(_SUBJECT_DISABLED)
        # iat is whole seconds: compare at that granularity (see SubjectState).
        if claims.issued_at.timestamp() < math.floor(state.tokens_valid_after.timestamp()):
            raise _Refused(_ISSUED_BEFORE_VALID_AFTER)
        if jti_entry is not None:
            raise _Refused(_JTI_REVOKED)
        if sid_entry is not None:
            raise _Refused(_SID_REVOKED)
        prefetched = MappingProxyType(dict(zip(extra, values, strict=True))) if extra else _NOTHING
        return claims.scopes & state.scopes, prefetched
