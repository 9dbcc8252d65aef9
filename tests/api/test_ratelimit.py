"""``rate_limited``: 429 with Retry-After, one audit event, buckets from trusted proxies only.

SEC-14 (per-IP limit on an auth route, audited) and SEC-16 (the bucket is the
peer, or the right-most untrusted X-Forwarded-For hop behind a trusted proxy).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI

from keel._clock import FrozenClock
from keel.api.app import create_app
from keel.api.ratelimit import rate_limited
from keel.audit.query import AuditRecord, query_events
from keel.auth import RateLimiter
from keel.db import migrate
from keel.settings import Settings

SettingsFactory = Callable[..., Settings]

LIMIT = 3
UNTRUSTED_PEER = ("10.9.9.9", 1234)
TRUSTED_PEER = ("10.1.0.5", 4321)
USER_AGENT = "keel-ratelimit-test/1.0"


def _router() -> APIRouter:
    router = APIRouter()

    @router.post("/auth/login", dependencies=[Depends(rate_limited("login", "login"))])
    async def login() -> dict[str, str]:
        return {"status": "checked"}

    return router


@pytest.fixture
async def app(settings_factory: SettingsFactory, clock: FrozenClock) -> AsyncIterator[FastAPI]:
    """The app, migrated and running (its lifespan) for the whole test."""
    settings = settings_factory(
        rate_limit_ip=LIMIT, rate_limit_window=60, trusted_proxies=["10.1.0.0/16"]
    )
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings, routers=[_router()], accounts=False, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def peer(app: FastAPI, address: tuple[str, int]) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose TCP peer address, as the app sees it, is ``address``."""
    transport = httpx.ASGITransport(app=app, client=address)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        http.headers["user-agent"] = USER_AGENT
        yield http


async def attempt(http: httpx.AsyncClient, forwarded_for: str | None = None) -> httpx.Response:
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    return await http.post("/auth/login", json={}, headers=headers)


async def refusals(app: FastAPI) -> list[AuditRecord]:
    async with app.state.keel.database.unit_of_work() as uow:
        return await query_events(uow, action="excess_rate_limit_exceeded")


async def test_sec_14_over_the_limit_is_429_with_retry_after_and_audited(app: FastAPI) -> None:
    async with peer(app, UNTRUSTED_PEER) as http:
        for _ in range(LIMIT):
            assert (await attempt(http)).status_code == 200
        refused = await attempt(http)
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "rate_limited"
        # LIMIT attempts at the start of a 60 s window: room again 20 s into the next.
        assert int(refused.headers["retry-after"]) == 80
        # Knocking on is refused too, but audited once per bucket and window.
        assert (await attempt(http)).status_code == 429
    [record] = await refusals(app)
    assert record.result == "failure"
    assert record.actor_type == "anonymous"
    assert record.target_type == "route"
    assert record.target_id == "/auth/login"
    assert record.source_ip == "10.9.9.9"
    assert record.user_agent == USER_AGENT
    assert record.request_id == refused.headers["x-request-id"]
    assert record.details == {"limit": "ip", "endpoint": "login"}


async def test_sec_14_the_limit_lifts_after_retry_after(app: FastAPI, clock: FrozenClock) -> None:
    async with peer(app, UNTRUSTED_PEER) as http:
        for _ in range(LIMIT):
            await attempt(http)
        wait = int((await attempt(http)).headers["retry-after"])
        clock.advance(wait - 1)
        assert (await attempt(http)).status_code == 429
        clock.advance(1)
        assert (await attempt(http)).status_code == 200


async def test_sec_16_untrusted_peer_is_counted_under_its_own_address(app: FastAPI) -> None:
    async with peer(app, UNTRUSTED_PEER) as http:
        statuses = [(await attempt(http, f"1.2.3.{n}")).status_code for n in range(LIMIT + 2)]
    # A client-sent X-Forwarded-For changes nothing: every attempt lands in 10.9.9.9's bucket.
    assert statuses == [200] * LIMIT + [429, 429]
    [record] = await refusals(app)
    assert record.source_ip == "10.9.9.9"
    async with peer(app, ("10.9.9.10", 1234)) as other:
        assert (await attempt(other, "10.9.9.9")).status_code == 200


async def test_sec_16_behind_a_trusted_proxy_the_bucket_is_the_right_most_untrusted_hop(
    app: FastAPI,
) -> None:
    async with peer(app, TRUSTED_PEER) as http:
        for _ in range(LIMIT):
            assert (await attempt(http, "6.6.6.6, 5.5.5.5")).status_code == 200
        assert (await attempt(http, "6.6.6.6, 5.5.5.5")).status_code == 429
        # The same bucket whatever the client put on the left...
        assert (await attempt(http, "5.5.5.5")).status_code == 429
        assert (await attempt(http, "9.9.9.9, 5.5.5.5")).status_code == 429
        # ...and another client behind the same proxy has its own.
        assert (await attempt(http, "6.6.6.6, 5.5.5.4")).status_code == 200
    [record] = await refusals(app)
    assert record.source_ip == "5.5.5.5"


async def test_one_limiter_per_app(app: FastAPI) -> None:
    async with peer(app, UNTRUSTED_PEER) as http:
        await attempt(http)
        limiter = app.state.keel.service(RateLimiter)
        await attempt(http)
    assert app.state.keel.service(RateLimiter) is limiter
