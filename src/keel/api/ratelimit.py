"""Per-IP and global rate limits on authentication endpoints, as a FastAPI dependency (SEC-14).

``Depends(rate_limited("login"))`` counts every request to the route against
its client IP and against all clients (``keel.auth.ratelimit.RateLimiter``,
one per app, over the app's shared cache store). The IP is the one the
trusted-proxy middleware settled on (SEC-16): the peer itself, or the
right-most untrusted ``X-Forwarded-For`` hop when the peer is a trusted proxy;
never a header an untrusted client sent.

A refusal is a 429 with ``Retry-After`` (``TooManyRequests``) and an
``excess_rate_limit_exceeded`` audit event in a transaction of its own, one
per limit, bucket and window, so a flood of refused requests does not become a
flood of audit writes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request

from keel._logging import event
from keel.api.origin import RequestOrigin, origin_of
from keel.api.state import AppContext, get_context
from keel.audit.vocabulary import Action, ActorType, Result
from keel.auth.ratelimit import RateLimiter
from keel.errors import TooManyRequests

__all__ = ["rate_limited", "rate_limiter"]

_log = logging.getLogger("keel.api.ratelimit")


def rate_limiter(app: FastAPI, context: AppContext) -> RateLimiter:
    """The app's one ``RateLimiter``, built on first use from its context."""
    limiter = getattr(app.state, "keel_rate_limiter", None)
    if not isinstance(limiter, RateLimiter):
        limiter = RateLimiter(context.store, context.settings.throttle, clock=context.clock)
        app.state.keel_rate_limiter = limiter
    return limiter


def rate_limited(name: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency that counts one attempt on endpoint ``name``; 429 when over a limit."""

    async def limit(request: Request) -> None:
        context = get_context(request)
        limiter = rate_limiter(request.app, context)
        origin = origin_of(request)
        try:
            await limiter.hit(origin.source_ip)
        except TooManyRequests as exc:
            if await limiter.first_refusal(exc.limit, origin.source_ip):
                await _record_refusal(request, context, origin, name, exc)
            raise

    limit.__name__ = f"rate_limited_{name}"
    return limit


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
                source_ip=origin.source_ip,
                user_agent=origin.user_agent,
                request_id=origin.request_id,
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
