"""In-process API tests: a fresh app per test, driven through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from keel.api.principal import Principal
from keel.settings import Settings

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


@pytest.fixture
def settings_factory(sqlite_url: str) -> Callable[..., Settings]:
    """Settings for a test: a private SQLite file, no Redis, plus ``overrides``."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"database_url": sqlite_url, "redis_url": None}
        values.update(overrides)
        return Settings(**values)

    return make


class HeaderAuthenticator:
    """Test double: ``X-Test-User: name scope scope`` authenticates as ``name``."""

    async def authenticate(self, request: Request) -> Principal | None:
        raw = request.headers.get("x-test-user")
        if not raw:
            return None
        subject, *scopes = raw.split()
        return Principal(subject=subject, scopes=frozenset(scopes))
