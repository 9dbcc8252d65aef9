"""``GET /metrics``: the Prometheus exposition of every worker, for a scraper with the token.

Never public by default: without ``KEEL_METRICS_TOKEN`` (or with
``KEEL_METRICS=false``) the route does not exist and the path is a plain 404.
With it, the request must carry ``Authorization: Bearer <token>``, compared in
constant time; anything else is a 401 problem (``metrics_unauthorized``). The
route is not in the OpenAPI schema, and a scrape writes no audit event (only
the access line every request gets).

The answer is built off the event loop: under gunicorn it reads every worker's
value files (``keel.metrics.exposition``).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Coroutine
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import Response

from keel import metrics
from keel.api.problems import get_request_id, problem_response
from keel.api.routing import add_direct_route
from keel.db import Database
from keel.metrics.exposition import render
from keel.settings import MetricsSettings

__all__ = ["METRICS_PATH", "SAMPLE_INTERVAL", "install_metrics", "sampler"]

METRICS_PATH: Final = "/metrics"
#: Seconds between two samples of a worker's requests in flight, memory and pool.
SAMPLE_INTERVAL: Final = 1.0
_BEARER: Final = "bearer "


def _presented(header: str | None) -> bytes:
    if header is None or header[: len(_BEARER)].lower() != _BEARER:
        return b""
    return header[len(_BEARER) :].strip().encode("utf-8", "surrogateescape")


def install_metrics(app: FastAPI, settings: MetricsSettings, database: Database) -> None:
    """Add ``GET /metrics`` when metrics are on and a token is set; otherwise nothing."""
    if not settings.enabled or settings.token is None:
        return
    expected = settings.token.get_secret_value().encode("utf-8")

    async def scrape(request: Request) -> Response:
        given = _presented(request.headers.get("authorization"))
        if not hmac.compare_digest(given, expected):
            return problem_response(
                401,
                "metrics_unauthorized",
                detail="A valid metrics token is required.",
                request_id=get_request_id(request),
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        metrics.sample_process(database.pool_status())
        body, content_type = await asyncio.to_thread(render)
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    add_direct_route(app, METRICS_PATH, scrape, methods=["GET"], include_in_schema=False)


def sampler(database: Database) -> Callable[[], Coroutine[Any, Any, None]]:
    """A service that samples this worker's in-flight requests, memory and pool every second."""

    async def run() -> None:
        try:
            while True:
                metrics.sample_process(database.pool_status())
                await asyncio.sleep(SAMPLE_INTERVAL)
        finally:
            # Cancelled at shutdown, once requests have ended: write the last counts.
            metrics.sample_process()

    return run
