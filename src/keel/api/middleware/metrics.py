"""Request count, latency and in-flight gauge, labelled by route template, never by path.

Pure ASGI and small: one clock read on each side of the request, and the
request added to the worker's in-memory tally (``keel.metrics._tally``), which
is written to the value store every second, at a scrape and at shutdown
(``keel.metrics.sample_process``); requests in flight are counted the same
way. Under gunicorn every metric write is a locked write to the worker's value
file, and those writes per request cost more than the rest of this middleware.
The route is the template Starlette's router leaves in ``scope["route"]``
(``/admin/users/{user_id}``); a request no route matched is ``unmatched``, and
a method outside the standard ones is ``other``, so no caller can grow the
label sets.
"""

from __future__ import annotations

from time import perf_counter
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.metrics import Instruments

__all__ = ["UNMATCHED", "RequestMetricsMiddleware", "route_label"]

UNMATCHED: Final = "unmatched"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(scope: Scope) -> str:
    """The matched route's template, or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetricsMiddleware:
    """Count and time each HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, *, instruments: Instruments) -> None:
        self.app = app
        self._instruments = instruments

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when nothing was sent (the server's own 500)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        instruments = self._instruments
        instruments.requests_in_flight += 1
        started = perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = perf_counter() - started
            instruments.requests_in_flight -= 1
            method = scope["method"]
            instruments.requests.add(
                route_label(scope), method if method in _METHODS else "other", status, elapsed
            )
