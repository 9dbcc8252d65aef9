"""Factories for the interop tests (``keel serve --factory tests.interop.factories:app``).

keel as it will be wired, minus the accounts side: the real
``BearerAuthenticator`` over the configured signing keys (``KEEL_JWT_*``), the
JWKS route, and two test-only routes that exist nowhere else:

- ``POST /_test/token`` issues an access token for the fixed :data:`SUBJECT`
  (the stand-in for ``/auth/login``; unauthenticated, so never in a real app);
- ``GET /_test/me`` answers only that token's holder.

The subject state comes from a fixed in-memory directory instead of the
database, and every session it issues is live.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI

from keel._clock import SystemClock
from keel.api.app import create_app
from keel.api.bearer import BearerAuthenticator
from keel.api.jwks import build_jwks_router
from keel.api.principal import Principal, current_principal
from keel.auth import (
    UNKNOWN_SUBJECT,
    SecurityState,
    SubjectRecord,
    SubjectState,
    TokenAuthenticator,
    VerifiedTokenCache,
)
from keel.cache import build_stores
from keel.security.keys import load_key_set
from keel.security.tokens import AccessTokens
from keel.settings import Settings

__all__ = ["SCOPES", "SUBJECT", "app"]

SUBJECT = "5b0e8c8e-2f4e-4c3e-9a57-000000000001"
SCOPES = ("user",)
_STATE = SubjectState(
    active=True, tokens_valid_after=datetime(2000, 1, 1, tzinfo=UTC), scopes=frozenset(SCOPES)
)


async def _directory(subject_id: str) -> SubjectRecord:
    return SubjectRecord(1, _STATE) if subject_id == SUBJECT else UNKNOWN_SUBJECT


async def _sessions(subject_id: str, session_id: str) -> bool:
    return subject_id == SUBJECT


def _test_router(tokens: AccessTokens) -> APIRouter:
    router = APIRouter(prefix="/_test", include_in_schema=False)

    @router.post("/token")
    async def token() -> dict[str, Any]:
        issued = tokens.issue(
            subject=SUBJECT, session_id=secrets.token_urlsafe(12), scopes=list(SCOPES)
        )
        return {"access_token": issued.token, "token_type": "Bearer", "jti": issued.jti}

    @router.get("/me")
    async def me(principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, Any]:
        return {"subject": principal.subject, "scopes": sorted(principal.scopes)}

    return router


def app(settings: Settings) -> FastAPI:
    """keel with bearer authentication, the JWKS route and the test token route."""
    clock = SystemClock()
    keys = load_key_set(settings.tokens, production=settings.is_production)
    tokens = AccessTokens(keys, settings.tokens, clock=clock)
    verifier = VerifiedTokenCache(tokens, clock=clock)
    stores = build_stores(settings.cache, clock)
    state = SecurityState(
        stores.shared, stores.channel, load_subject=_directory, load_session=_sessions
    )
    authenticator = BearerAuthenticator(TokenAuthenticator(verifier, state))
    return create_app(
        settings,
        routers=[build_jwks_router(keys), _test_router(tokens)],
        clock=clock,
        authenticator=authenticator,
        stores=stores,
    )
