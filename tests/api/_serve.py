"""In-process API tests' helpers: serve an app through httpx's ASGI transport; a header
authenticator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
from fastapi import FastAPI, Request

from keel.api.principal import Principal

AppClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@asynccontextmanager
async def serve_in_process(
    app: FastAPI,
    *,
    client: tuple[str, int] = ("127.0.0.1", 50000),
    base_url: str = "http://testserver",
) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan around an httpx client bound to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            yield http


class HeaderAuthenticator:
    """Test double: ``X-Test-User: name scope scope`` authenticates as ``name``."""

    async def authenticate(self, request: Request) -> Principal | None:
        raw = request.headers.get("x-test-user")
        if not raw:
            return None
        subject, *scopes = raw.split()
        return Principal(subject=subject, scopes=frozenset(scopes))
