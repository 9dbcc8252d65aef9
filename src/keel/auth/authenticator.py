"""``TokenAuthenticator``: an access token in, an :class:`Authentication` out, or one opaque error.

Framework-free: the HTTP side (``keel.api.bearer``) finds the token in the
request and hands it here. For every request:

1. the signature and claims (``AccessTokens.verify``: algorithm, ``kid``,
   ``typ``, ``iss``/``aud``, ``exp``/``iat``/``nbf``; SEC-28..SEC-33), best
   behind a :class:`~keel.auth.VerifiedTokenCache` so a token's signature is
   computed once per process rather than once per request;
2. the subject's current record and its session's state, from
   :class:`~keel.auth.SecurityState` (a near cache, the shared store or the
   database, whichever is nearest and safe): unknown or disabled subjects are
   refused, so are tokens issued before the subject's ``tokens_valid_after``
   and tokens of a session that ended (SEC-36);
3. the scopes: the token's, intersected with the ones the subject holds now,
   so a demoted admin's earlier token loses ``admin`` on the next request.

Every refusal is the same :class:`~keel.security.tokens.InvalidToken`, chained
from its reason (STYLE habit 9); the reason is logged, the token never is
(SEC-43, SEC-65). A database that does not answer is not a credential
failure: its ``DependencyUnavailable`` propagates (503), so clients do not
throw away good tokens during an outage.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from keel._logging import event
from keel.auth.state import SecurityState
from keel.security.tokens import AccessClaims, AccessTokenVerifier, InvalidToken

__all__ = ["Authentication", "TokenAuthenticator"]

_log = logging.getLogger("keel.auth")

# The reasons a well-signed token is refused; logged, never sent to the client.
_UNKNOWN_SUBJECT: Final = "unknown_subject"
_SUBJECT_DISABLED: Final = "subject_disabled"
_ISSUED_BEFORE_VALID_AFTER: Final = "issued_before_valid_after"
_SESSION_ENDED: Final = "session_ended"


class _Refused(ValueError):
    """Why a well-signed token was refused; only ever the ``__cause__`` of an ``InvalidToken``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Authentication:
    """A caller authenticated by an access token: who, in which session, allowed what.

    ``profile`` is the owner's view of the account as the subject's record
    holds it (ready JSON), or ``None``.
    """

    subject: str
    session_id: str
    token_id: str
    scopes: frozenset[str]
    issued_at: datetime
    expires_at: datetime
    profile: bytes | None = None


class TokenAuthenticator:
    """Check access tokens against their signature, their subject's record and their session."""

    def __init__(self, verifier: AccessTokenVerifier, state: SecurityState) -> None:
        self._verifier = verifier
        self._state = state

    @property
    def state(self) -> SecurityState:
        return self._state

    async def authenticate(self, token: str) -> Authentication:
        """The authentication ``token`` carries; ``InvalidToken`` for anything not acceptable."""
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
        try:
            scopes, profile = await self._admit(claims)
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
            profile=profile,
        )

    async def _admit(self, claims: AccessClaims) -> tuple[frozenset[str], bytes | None]:
        record, live = await self._state.check(claims.subject, claims.session_id)
        state = record.state
        if state is None:
            raise _Refused(_UNKNOWN_SUBJECT)
        if not state.active:
            raise _Refused(_SUBJECT_DISABLED)
        # iat is whole seconds: compare at that granularity (see SubjectState).
        if claims.issued_at.timestamp() < math.floor(state.tokens_valid_after.timestamp()):
            raise _Refused(_ISSUED_BEFORE_VALID_AFTER)
        if not live:
            raise _Refused(_SESSION_ENDED)
        return claims.scopes & state.scopes, record.profile
