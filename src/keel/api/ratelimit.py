"""Per-client and global rate limits on authentication routes, per route family (SEC-14).

``Depends(rate_limited("register", "register"))`` counts every request to the
route against its client and against all clients of its family
(``keel.auth.ratelimit.RateLimiter``, one per app, over the app's shared
cache store); :func:`count_attempt` does the same from inside a route that
must read its body first (the login routes, whose family depends on the
grant, and whose known users pass a spent global budget). Families:
``login`` (``/auth/login``, the token endpoint's password grant),
``refresh`` (``/auth/refresh``, the ``refresh_token`` grant), ``register``,
``password`` (forgot and reset) and ``verify``; each has budgets of its own.

The client is the one the trusted-proxy middleware settled on (SEC-16): the
peer itself, or the right-most untrusted ``X-Forwarded-For`` hop when the peer
is a trusted proxy; never a header an untrusted client sent.

A refusal is a 429 with ``Retry-After`` (``TooManyRequests``) and an
``excess_rate_limit_exceeded`` audit event in a transaction of its own, one
per limit, bucket and window, so a flood of refused requests does not become a
flood of audit writes.

A known user from a known source is not held back by a spent global budget
(its per-client limit and the account's own limits still apply): a stranger
population can exhaust the budget for strangers only. Keycloak does the same
in spirit: its brute-force state is the user's own, and nothing global
refuses a user whose own record is clean.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import Request

from keel._logging import event
from keel.accounts.email import InvalidEmail, normalise_email
from keel.api.origin import RequestOrigin, origin_of
from keel.api.state import AppContext, get_context
from keel.audit.vocabulary import Action, ActorType, Result
from keel.auth.ratelimit import RateLimiter
from keel.auth.throttle import LoginThrottle
from keel.errors import TooManyRequests
from keel.metrics import record_rate_limit_refusal

__all__ = ["count_attempt", "rate_limited"]

_log = logging.getLogger("keel.api.ratelimit")


async def count_attempt(
    request: Request, name: str, family: str, *, account: str | None = None
) -> None:
    """Count one attempt on endpoint ``name`` of ``family``; 429 when over a limit.

    ``account`` (the e-mail the attempt is for) lets a known user from a known
    source through a spent global budget.
    """
    context = get_context(request)
    limiter = context.service(RateLimiter)
    origin = origin_of(request)
    try:
        await limiter.hit(
            origin.source_ip, family, exempt=_known_source(request, account, origin.source_ip)
        )
    except TooManyRequests as exc:
        record_rate_limit_refusal(family)
        if await limiter.first_refusal(exc.limit, origin.source_ip, family):
            await _record_refusal(request, context, origin, name, exc)
        raise


def rate_limited(name: str, family: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency that counts one attempt on endpoint ``name`` of ``family``."""

    async def limit(request: Request) -> None:
        await count_attempt(request, name, family)

    limit.__name__ = f"rate_limited_{name}"
    return limit


def _known_source(
    request: Request, account: str | None, source_ip: str | None
) -> Callable[[], Awaitable[bool]] | None:
    throttle = get_context(request).services.get(LoginThrottle)
    if account is None or source_ip is None or not isinstance(throttle, LoginThrottle):
        return None
    try:
        account_key = normalise_email(account).key
    except InvalidEmail:
        return None
    known = throttle

    async def is_known() -> bool:
        return await known.is_known(account_key, source_ip)

    return is_known


async def _record_refusal(
    request: Request,
    context: AppContext,
    origin: RequestOrigin,
    name: str,
    exc: TooManyRequests,
) -> None:
    trail = context.audit
    try:
        await trail.record_alone(
            trail.event(
                Action.EXCESS_RATE_LIMIT_EXCEEDED,
                Result.FAILURE,
                actor_type=ActorType.ANONYMOUS,
                target_type="route",
                target_id=request.url.path,
                origin=origin,
                details={"limit": exc.limit, "endpoint": name},
            )
        )
    except Exception as error:  # noqa: BLE001 - the answer is a 429 either way
        # The client still gets its 429; losing this record is logged, never silent.
        event(
            _log,
            logging.ERROR,
            "audit_write_failed",
            action=Action.EXCESS_RATE_LIMIT_EXCEEDED.value,
            error=type(error).__name__,
        )
