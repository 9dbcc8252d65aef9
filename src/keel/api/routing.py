"""``DirectRoute`` and ``add_direct_route``: the few hot routes, without FastAPI's per-request work.

A route added through an included ``APIRouter`` is found by walking the
included routers, then FastAPI resolves its dependencies, validates and
serialises: tens of microseconds per request, more than the whole of a bare
route here. keel's hottest routes (``/livez``, ``/readyz``, ``GET /users/me``)
take the request alone and return a finished ``Response``, so they need none
of it. A ``DirectRoute`` is still an ``APIRoute`` (documented in OpenAPI with
its ``response_model`` and ``responses``), added straight to the app's own
route table, ahead of the included routers, and its handler is the endpoint
itself: FastAPI's exception handlers still turn its errors into responses.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, cast

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["DirectEndpoint", "DirectRoute", "add_direct_route"]

#: An endpoint that takes the request and returns the whole response.
DirectEndpoint = Callable[[Request], Awaitable[Response]]


class DirectRoute(APIRoute):
    """An ``APIRoute`` whose endpoint is called with the request and answers by itself."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        parameters = list(inspect.signature(endpoint).parameters.values())
        if len(parameters) != 1 or not inspect.iscoroutinefunction(endpoint):
            raise TypeError("a direct endpoint is `async def endpoint(request) -> Response`")
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Any]:
        return cast("DirectEndpoint", self.endpoint)


def add_direct_route(
    app: FastAPI, path: str, endpoint: DirectEndpoint, *, methods: list[str], **kwargs: Any
) -> None:
    """Add ``endpoint`` to ``app``'s own route table as a ``DirectRoute``.

    Call it before ``include_router``: routes are matched in order, and these
    should be found first.
    """
    app.router.add_api_route(
        path, endpoint, methods=methods, route_class_override=DirectRoute, **kwargs
    )
