"""Security headers on every HTTP response, errors included (SEC-56..59).

The policy itself is :class:`keel.security.headers.HeaderPolicy`; this is the
ASGI shell that applies it to each ``http.response.start``.

Caching: a response that sets no ``Cache-Control`` gets ``no-store``. A route
whose responses carry credentials, tokens or personal data (SEC-58) declares
the :func:`no_store` dependency, which forces ``no-store`` even over a
``Cache-Control`` the route set itself::

    @router.post("/auth/login", dependencies=[Depends(no_store)])

or for a whole router: ``APIRouter(dependencies=[Depends(no_store)])``. Code
without FastAPI dependencies can call :func:`mark_no_store` on the scope.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Final

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.security.headers import HeaderPolicy

__all__ = ["NO_STORE_KEY", "SecurityHeadersMiddleware", "mark_no_store", "no_store"]

#: Key in ``scope["state"]`` that forces ``Cache-Control: no-store``.
NO_STORE_KEY: Final = "keel_no_store"


def mark_no_store(scope: MutableMapping[str, Any]) -> None:
    """Force ``Cache-Control: no-store`` on the response to this request."""
    scope.setdefault("state", {})[NO_STORE_KEY] = True


async def no_store(request: Request) -> None:
    """FastAPI dependency: this route's responses are never stored (``Cache-Control: no-store``)."""
    mark_no_store(request.scope)


def _route_path(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


class SecurityHeadersMiddleware:
    """Apply ``policy`` to every HTTP response."""

    def __init__(self, app: ASGIApp, *, policy: HeaderPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The state dict is shared by every (copied) scope below, so a mark set
        # by a route is visible here when its response starts.
        state = scope.setdefault("state", {})
        path = _route_path(scope)
        https = scope.get("scheme") == "https"

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = self.policy.apply(
                    message.get("headers", ()),
                    path=path,
                    https=https,
                    no_store=bool(state.get(NO_STORE_KEY)),
                )
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_secured)
