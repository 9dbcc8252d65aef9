"""The session routes: :func:`build_sessions_router`.

Routes (``/auth/refresh`` is public: the refresh token is the credential)::

    POST   /auth/refresh                         {refresh_token} → new access + refresh token
    POST   /auth/logout                          ends the caller's session → 204
    GET    /sessions                             the caller's live sessions
    DELETE /sessions/{session_id}                ends one of them → 204 (404 if not theirs)
    POST   /admin/users/{user_id}/sessions:revoke  (admin) ends all of a user's sessions

Token-bearing responses are ``Cache-Control: no-store`` (SEC-58). The rules
live in :class:`keel.auth.sessions.SessionService`, which ``create_app``
builds and keeps among the app's services (by type,
``context.service(SessionService)``); the routes ask for it there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from keel.api.account_models import StrictBody
from keel.api.contract import authenticated, problems
from keel.api.ids import SessionId, UserId
from keel.api.middleware import no_store
from keel.api.origin import origin_of
from keel.api.principal import Admin, Principal, current_principal
from keel.api.ratelimit import rate_limited
from keel.api.state import get_context
from keel.audit import ActorType
from keel.auth.sessions import Refreshed, SessionInfo, SessionService
from keel.errors import Forbidden

__all__ = [
    "build_sessions_router",
    "get_sessions",
    "refreshed_body",
]

_REFRESH_TOKEN_MAX: Final = 128
# OpenAPI links: a listed session's id is what DELETE /sessions/{session_id} takes.
_SESSION_LINKS: Final = {
    "EndSession": {
        "operationRef": "#/paths/~1sessions~1{session_id}/delete",
        "parameters": {"session_id": "$response.body#/sessions/0/id"},
    }
}


def get_sessions(request: Request) -> SessionService:
    """The ``SessionService`` ``create_app`` kept in the app's services."""
    return get_context(request).service(SessionService)


Sessions = Annotated[SessionService, Depends(get_sessions)]
Caller = Annotated[Principal, Depends(current_principal)]


class RefreshRequest(StrictBody):
    refresh_token: Annotated[str, Field(min_length=1, max_length=_REFRESH_TOKEN_MAX)]


class RefreshResponse(BaseModel):
    """RFC 6749 §5.1 with the rotated refresh token."""

    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    refresh_token: str


class SessionResponse(BaseModel):
    id: str
    current: bool
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    source_ip: str | None
    user_agent: str | None

    @classmethod
    def of(cls, info: SessionInfo, *, current: str | None) -> SessionResponse:
        return cls(
            id=info.id,
            current=info.id == current,
            created_at=info.created_at,
            last_used_at=info.last_used_at,
            expires_at=info.expires_at,
            source_ip=info.source_ip,
            user_agent=info.user_agent,
        )


class SessionsResponse(BaseModel):
    sessions: list[SessionResponse]


class RevokedResponse(BaseModel):
    revoked: int


def refreshed_body(result: Refreshed) -> dict[str, Any]:
    """The token response of a refresh (also the ``refresh_token`` grant's)."""
    return {
        "access_token": result.access_token.token,
        "token_type": "bearer",
        "expires_in": result.expires_in,
        "refresh_token": result.refresh_token,
    }


def _user_session(principal: Principal) -> tuple[str, str | None]:
    # Sessions are for the account's own user, never an API key (SEC-45).
    if principal.actor_type is not ActorType.USER:
        raise Forbidden()
    return principal.subject, getattr(principal, "session_id", None)


def build_sessions_router() -> APIRouter:
    """A fresh router with every session route (the service comes from the app's services)."""
    router = APIRouter(tags=["sessions"])

    @router.post(
        "/auth/refresh",
        response_model=RefreshResponse,
        dependencies=[Depends(no_store), Depends(rate_limited("refresh", "refresh"))],
        responses=problems(401, 415, 422, 429),
    )
    async def refresh(body: RefreshRequest, request: Request, sessions: Sessions) -> Any:
        """Exchange a refresh token for a new access token and the next refresh token."""
        return refreshed_body(await sessions.refresh(body.refresh_token, origin_of(request)))

    @router.post(
        "/auth/logout", status_code=204, dependencies=[Depends(no_store)], **authenticated()
    )
    async def logout(request: Request, principal: Caller, sessions: Sessions) -> Response:
        """End the caller's session: its refresh token and access tokens stop working at once."""
        user_id, session_id = _user_session(principal)
        if session_id is None:
            raise Forbidden()
        await sessions.logout(user_id, session_id, origin_of(request))
        return Response(status_code=204)

    @router.get(
        "/sessions",
        response_model=SessionsResponse,
        dependencies=[Depends(no_store)],
        **authenticated(extra={"responses": {"200": {"links": _SESSION_LINKS}}}),
    )
    async def list_sessions(principal: Caller, sessions: Sessions) -> Any:
        """The caller's live sessions; ``current`` marks the one this token belongs to."""
        user_id, current = _user_session(principal)
        infos = await sessions.list_sessions(user_id)
        return {"sessions": [SessionResponse.of(info, current=current) for info in infos]}

    @router.delete(
        "/sessions/{session_id}",
        status_code=204,
        dependencies=[Depends(no_store)],
        **authenticated(404),
    )
    async def revoke_session(
        request: Request,
        principal: Caller,
        session_id: SessionId,
        sessions: Sessions,
    ) -> Response:
        """End one of the caller's sessions (404 for an id that is not theirs: SEC-47)."""
        user_id, _ = _user_session(principal)
        await sessions.revoke(user_id, session_id, origin_of(request))
        return Response(status_code=204)

    @router.post(
        "/admin/users/{user_id}/sessions:revoke",
        response_model=RevokedResponse,
        dependencies=[Depends(no_store)],
        **authenticated(404),
    )
    async def revoke_user_sessions(
        request: Request,
        admin: Admin,
        user_id: UserId,
        sessions: Sessions,
    ) -> Any:
        """End every session of a user (admin); their access tokens stop at once."""
        count = await sessions.revoke_user(admin.subject, user_id, origin_of(request))
        return {"revoked": count}

    return router
