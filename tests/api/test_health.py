from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from keel.api.app import create_app
from keel.errors import ConfigurationError
from keel.runtime.lifecycle import Warmup
from keel.settings import Settings

from ._serve import serve_in_process

CLOSED_PG = "postgresql://keel:pw@127.0.0.1:1/keel"
CLOSED_REDIS = "redis://127.0.0.1:1/0"

SettingsFactory = Callable[..., Settings]


async def test_livez_answers_while_warmups_run_and_the_database_is_down(
    settings_factory: SettingsFactory,
) -> None:
    release = asyncio.Event()

    async def slow_warmup() -> None:
        await release.wait()

    app = create_app(
        settings_factory(database_url=CLOSED_PG, warmup_timeout=30),
        warmups=[Warmup("slow", slow_warmup, timeout=30)],
    )
    async with serve_in_process(app) as client:
        response = await client.get("/livez")
        assert response.status_code == 200
        assert response.content == b'{"status":"ok"}'
        assert response.headers["content-type"] == "application/json"
        assert not release.is_set()
        release.set()


async def test_readyz_ok_on_the_embedded_defaults(settings_factory: SettingsFactory) -> None:
    async with serve_in_process(create_app(settings_factory())) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}


async def test_readyz_503_when_the_database_is_down_and_reveals_nothing(
    settings_factory: SettingsFactory,
) -> None:
    app = create_app(settings_factory(database_url=CLOSED_PG, readiness_timeout=0.5))
    async with serve_in_process(app) as client:
        started = time.monotonic()
        response = await client.get("/readyz")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "down", "cache": "ok"},
    }
    assert elapsed < 2.0
    for leak in ("127.0.0.1", "keel", "pw", "asyncpg", "Error", "postgres"):
        assert leak not in response.text


async def test_readyz_degraded_when_redis_is_down(settings_factory: SettingsFactory) -> None:
    app = create_app(settings_factory(redis_url=CLOSED_REDIS, readiness_timeout=0.5))
    async with serve_in_process(app) as client:
        response = await client.get("/readyz")
        live = await client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {
        "status": "degraded",
        "checks": {"database": "ok", "cache": "degraded"},
    }
    assert live.status_code == 200


@pytest.mark.redis
async def test_readyz_ok_with_real_redis(settings_factory: SettingsFactory, redis_url: str) -> None:
    async with serve_in_process(create_app(settings_factory(redis_url=redis_url))) as client:
        # "degraded" until the invalidation channel has subscribed and heard its first PONG.
        for _ in range(200):
            response = await client.get("/readyz")
            if response.json()["status"] == "ok":
                break
            await asyncio.sleep(0.02)
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}


@pytest.mark.postgres
async def test_readyz_ok_with_real_postgres(
    settings_factory: SettingsFactory, postgres_url: str
) -> None:
    async with serve_in_process(create_app(settings_factory(database_url=postgres_url))) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


def test_create_app_connects_to_nothing(settings_factory: SettingsFactory) -> None:
    # Unreachable backends and no running loop: building must still succeed at once.
    started = time.monotonic()
    create_app(settings_factory(database_url=CLOSED_PG, redis_url=CLOSED_REDIS))
    assert time.monotonic() - started < 1.0


def test_production_refuses_to_build_with_configuration_errors(
    settings_factory: SettingsFactory,
) -> None:
    with pytest.raises(ConfigurationError, match=r"keel\.E001.*keel\.E006"):
        create_app(settings_factory(env="production"))


async def test_shutdown_cancels_warmups_and_closes_backends(
    settings_factory: SettingsFactory,
) -> None:
    cancelled = asyncio.Event()
    entered = asyncio.Event()

    async def never_ends() -> None:
        entered.set()
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    app = create_app(settings_factory(), warmups=[Warmup("forever", never_ends, timeout=3600)])
    async with serve_in_process(app) as client:
        assert (await client.get("/livez")).status_code == 200
        await asyncio.wait_for(entered.wait(), 5)
    context: Any = app.state.keel
    assert cancelled.is_set()
    assert context.supervisor.pending_tasks == 0
    assert context.supervisor.state.value == "stopped"


async def test_docs_are_off_in_production_and_on_in_development(
    settings_factory: SettingsFactory,
) -> None:
    async with serve_in_process(create_app(settings_factory())) as client:
        assert (await client.get("/openapi.json")).status_code == 200
    production = settings_factory(
        env="production",
        secret_key="Zq3v9LmX2pT7wR4yK8nB1cF6hJ0dS5gA-uE_iO",
        database_url="postgresql://keel@127.0.0.1:1/keel",
        audit_key="Audit-Kq8v2LmX9pT4wR7yK1nB3cF5hJ6dS0gA",
        jwt_algorithm="HS256",
        jwt_secret="Jwt-Hm7Qx2Lp9Vr4Ks8Tn3Wb6Yc1Zd5Fg0Aj",
        public_url="https://id.example.com",
        single_instance=True,
    )
    async with serve_in_process(create_app(production)) as client:
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 404


async def test_probes_answer_head_too(settings_factory: SettingsFactory) -> None:
    async with serve_in_process(create_app(settings_factory())) as client:
        for path in ("/livez", "/readyz"):
            response = await client.head(path)
            assert response.status_code == 200
            assert response.content == b""
        assert (await client.post("/livez")).status_code == 405
