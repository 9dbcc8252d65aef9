"""Who is calling: the ``Principal``, how it is found, and the guards routes use.

An ``Authenticator`` turns a request into a ``Principal`` or ``None``. keel's
default denies everyone, so a guarded route is never open by accident; the
accounts issue plugs in access-token authentication. Guards raise domain
errors (``Unauthenticated`` → 401 with ``WWW-Authenticate: Bearer``,
``Forbidden`` → 403); ``api/errors.py`` maps them. A refused scope check is
audited (``authz_fail``) once per caller, route, method and rate-limit window.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from keel._logging import event
from keel.accounts.roles import ROLE_ADMIN
from keel.api.identity import Authenticator, DenyAll, Principal
from keel.api.origin import origin_of
from keel.api.state import get_context
from keel.audit.vocabulary import Action, Result
from keel.auth.ratelimit import RateLimiter
from keel.errors import Forbidden, Unauthenticated

__all__ = [
    "ADMIN_SCOPE",
    "Admin",
    "Authenticator",
    "DenyAll",
    "Principal",
    "current_principal",
    "require_scope",
]

#: The scope keel's administration routes require: what the ``admin`` role grants.
ADMIN_SCOPE = ROLE_ADMIN

_log = logging.getLogger("keel.api.principal")


_PRINCIPAL_KEY = "keel.principal"


async def current_principal(request: Request) -> Principal:
    """The authenticated caller, or ``Unauthenticated`` (one opaque 401).

    The credentials are checked once per request, whoever asks: the answer is
    kept in the request's scope. A plain coroutine, so a hot route may await
    it directly instead of through FastAPI's dependency resolution.
    """
    scope = request.scope
    principal = scope.get(_PRINCIPAL_KEY)
    if principal is None:
        principal = await get_context(request).authenticator.authenticate(request)
        if principal is None:
            raise Unauthenticated()
        scope[_PRINCIPAL_KEY] = principal
    assert isinstance(principal, Principal)
    return principal


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must hold ``scope`` (403 otherwise)."""

    async def guard(
        request: Request,
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        if scope not in principal.scopes:
            # A refused attempt changes nothing else: it gets a transaction of its own.
            await _record_denial(request, principal, scope)
            raise Forbidden()
        return principal

    guard.__name__ = f"require_scope_{scope}"
    return guard


#: A route parameter: the caller, who must hold the admin scope (403 otherwise).
Admin = Annotated[Principal, Depends(require_scope(ADMIN_SCOPE))]


async def _first_denial(request: Request, principal: Principal, scope: str, route: str) -> bool:
    """Whether this is the caller's first refusal on ``route`` in this rate-limit window."""
    context = get_context(request)
    try:
        return await context.service(RateLimiter).first_in_window(
            "authz", principal.actor_type.value, principal.subject, scope, request.method, route
        )
    except Exception as exc:  # noqa: BLE001 - unsure whether it is the first: record it
        event(_log, logging.WARNING, "refusal_gate_failed", error=type(exc).__name__)
        return True


async def _record_denial(request: Request, principal: Principal, scope: str) -> None:
    # One record per caller, route (its template: ids in the path buy no extra rows), method
    # and window, as for rate-limit refusals: a caller looping over a route it may not use
    # does not queue a write on the chain's lock for every 403.
    route = getattr(request.scope.get("route"), "path", None) or request.url.path
    if not await _first_denial(request, principal, scope, route):
        return
    trail = get_context(request).audit
    origin = origin_of(request)
    try:
        await trail.record_alone(
            trail.event(
                Action.AUTHZ_FAIL,
                Result.FAILURE,
                actor_type=principal.actor_type,
                actor_id=principal.subject,
                target_type="route",
                target_id=request.url.path,
                origin=origin,
                details={
                    "required_scope": scope,
                    "method": request.method,
                    "route": route,
                    "window_seconds": get_context(request).settings.throttle.window,
                },
            )
        )
    except Exception as exc:  # noqa: BLE001 - the answer is a denial either way
        # The caller still gets its 403; losing this record is logged, never silent.
        event(
            _log, logging.ERROR, "audit_write_failed", action="authz_fail", error=type(exc).__name__
        )
