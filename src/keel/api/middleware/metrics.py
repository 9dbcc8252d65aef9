"""Request count, latency and in-flight gauge, labelled by route template, never by path.

Pure ASGI and small: one clock read on each side of the request, one counter
and one histogram observation, through label children cached per (route,
method, status). Requests in flight are counted in memory and published with
the worker's other samples (``keel.metrics.sample_process``): under gunicorn
every metric write is a locked write to the worker's value file, and two of
them per request cost more than the rest of this middleware. The route is the template
Starlette's router leaves in ``scope["route"]`` (``/admin/users/{user_id}``);
a request no route matched is ``unmatched``, and a method outside the standard
ones is ``other``, so no caller can grow the label sets.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, Final

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
        self._requests = instruments.http_requests
        self._duration = instruments.http_duration
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

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
            key = (route_label(scope), method if method in _METHODS else "other", status)
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    self._requests.labels(key[0], key[1], str(status)),
                    self._duration.labels(key[0], key[1]),
                )
            children[0].inc()
            children[1].observe(elapsed)
