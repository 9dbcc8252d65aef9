"""``/livez`` (no I/O, ever) and ``/readyz`` (database and cache, short timeouts)."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from keel._logging import event
from keel.api.routing import add_direct_route
from keel.api.state import AppContext, get_context
from keel.errors import DependencyUnavailable

__all__ = ["install_health"]

_log = logging.getLogger("keel.health")
_LIVE_BODY = b'{"status":"ok"}'

Check = Literal["ok", "degraded", "down"]


def install_health(app: FastAPI) -> None:
    """Add ``/livez`` and ``/readyz`` (GET and HEAD: load balancers probe with either)."""
    for path, endpoint in (("/livez", livez), ("/readyz", readyz)):
        add_direct_route(app, path, endpoint, methods=["GET", "HEAD"], include_in_schema=False)


async def livez(request: Request) -> Response:
    """Liveness: the worker's event loop answers. Constant body, touches nothing."""
    return Response(_LIVE_BODY, media_type="application/json")


async def readyz(request: Request) -> Response:
    """Readiness: 200 ok/degraded while the database answers, 503 when it does not.

    The body names only each check and its state, never hosts, errors or versions.
    """
    context = get_context(request)
    timeout = context.settings.lifecycle.readiness_timeout
    database, cache = await asyncio.gather(
        _database_check(context, timeout), _cache_check(context, timeout)
    )
    checks = {"database": database, "cache": cache}
    if database != "ok":
        return JSONResponse({"status": "unavailable", "checks": checks}, status_code=503)
    return JSONResponse({"status": "ok" if cache == "ok" else "degraded", "checks": checks})


async def _database_check(context: AppContext, budget: float) -> Check:
    try:
        await context.database.ping(budget)
    except DependencyUnavailable as exc:
        event(_log, logging.WARNING, "readiness_database_down", error=type(exc).__name__)
        return "down"
    return "ok"


async def _cache_check(context: AppContext, budget: float) -> Check:
    try:
        async with asyncio.timeout(budget):
            await context.store.ping()
    except (DependencyUnavailable, TimeoutError) as exc:
        event(_log, logging.WARNING, "readiness_cache_down", error=type(exc).__name__)
        return "down"
    # The security cache's channel too: while it is unusable, bearer checks read the database.
    healthy = context.store.status == "ok" and context.channel.usable
    return "ok" if healthy else "degraded"
