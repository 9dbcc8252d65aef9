"""``RequestMetricsMiddleware``: counts and times requests by route template, never by path."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from prometheus_client import CollectorRegistry, generate_latest

from keel import metrics
from keel.api.middleware.metrics import UNMATCHED, RequestMetricsMiddleware
from keel.metrics import Instruments


class Probe:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.instruments = Instruments(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """The value once the worker's tally is written (as every second and at a scrape)."""
        self.instruments.publish()
        return self.written(name, **labels)

    def written(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def app(probe: Probe) -> FastAPI:
    app = FastAPI()
    gate = asyncio.Event()
    app.state.gate = gate

    @app.get("/users/{user_id}")
    async def user(user_id: str) -> dict[str, str]:
        return {"id": user_id}

    @app.get("/gone/{item}")
    async def gone(item: str) -> dict[str, str]:
        raise HTTPException(status_code=410)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unhandled")

    @app.get("/wait")
    async def wait() -> dict[str, bool]:
        await gate.wait()
        return {"ok": True}

    app.add_middleware(RequestMetricsMiddleware, instruments=probe.instruments)
    return app


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_requests_are_counted_by_route_template_method_and_status(
    http: httpx.AsyncClient, probe: Probe
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for user_id in ids:
        assert (await http.get(f"/users/{user_id}")).status_code == 200
    assert (await http.get(f"/gone/{ids[0]}")).status_code == 410
    assert (await http.post(f"/users/{ids[0]}")).status_code == 405

    labels = {"route": "/users/{user_id}", "method": "GET", "status": "200"}
    assert probe.value("keel_http_requests_total", **labels) == 3
    gone = {"route": "/gone/{item}", "method": "GET", "status": "410"}
    assert probe.value("keel_http_requests_total", **gone) == 1
    # The route matched by path but not by method still names its template.
    refused = {"route": "/users/{user_id}", "method": "POST", "status": "405"}
    assert probe.value("keel_http_requests_total", **refused) == 1
    timed = {"route": "/users/{user_id}", "method": "GET"}
    assert probe.value("keel_http_request_duration_seconds_count", **timed) == 3
    assert probe.value("keel_http_request_duration_seconds_sum", **timed) > 0
    text = generate_latest(probe.registry).decode()
    assert not any(user_id in text for user_id in ids)


async def test_unmatched_paths_and_unknown_methods_share_one_label(
    http: httpx.AsyncClient, probe: Probe
) -> None:
    for n in range(5):
        assert (await http.get(f"/no/such/{uuid.uuid4()}/{n}")).status_code == 404
    assert (await http.request("BREW", "/users/x")).status_code == 405
    assert probe.value("keel_http_requests_total", route=UNMATCHED, method="GET", status="404") == 5
    assert (
        probe.value(
            "keel_http_requests_total", route="/users/{user_id}", method="other", status="405"
        )
        == 1
    )
    routes = {
        sample.labels["route"]
        for family in probe.registry.collect()
        for sample in family.samples
        if "route" in sample.labels
    }
    assert routes == {UNMATCHED, "/users/{user_id}"}


async def test_an_exception_counts_as_a_500(http: httpx.AsyncClient, probe: Probe) -> None:
    assert (await http.get("/boom")).status_code == 500
    labels = {"route": "/boom", "method": "GET", "status": "500"}
    assert probe.value("keel_http_requests_total", **labels) == 1
    assert probe.instruments.requests_in_flight == 0


async def test_in_flight_is_counted_in_memory_and_published_by_a_sample(
    app: FastAPI, http: httpx.AsyncClient, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "_active", probe.instruments)
    pending = asyncio.create_task(http.get("/wait"))
    for _ in range(100):
        if probe.instruments.requests_in_flight == 1:
            break
        await asyncio.sleep(0.01)
    assert probe.written("keel_http_requests_in_flight") == 0  # nothing written per request
    metrics.sample_process()
    assert probe.written("keel_http_requests_in_flight") == 1
    app.state.gate.set()
    assert (await pending).status_code == 200
    labels = {"route": "/wait", "method": "GET", "status": "200"}
    assert probe.written("keel_http_requests_total", **labels) == 0
    metrics.sample_process()
    assert probe.written("keel_http_requests_in_flight") == 0
    assert probe.written("keel_http_requests_total", **labels) == 1


async def test_in_flight_rises_during_a_request_and_falls_after(
    app: FastAPI, http: httpx.AsyncClient, probe: Probe
) -> None:
    pending = asyncio.create_task(http.get("/wait"))
    for _ in range(100):
        if probe.instruments.requests_in_flight == 1:
            break
        await asyncio.sleep(0.01)
    assert probe.instruments.requests_in_flight == 1
    app.state.gate.set()
    assert (await pending).status_code == 200
    assert probe.instruments.requests_in_flight == 0


async def test_lifespan_and_websocket_scopes_pass_through(probe: Probe) -> None:
    seen: list[str] = []

    async def inner(scope: dict[str, object], receive: object, send: object) -> None:
        seen.append(str(scope["type"]))

    middleware = RequestMetricsMiddleware(inner, instruments=probe.instruments)  # type: ignore[arg-type]
    for kind in ("lifespan", "websocket"):
        await middleware({"type": kind}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan", "websocket"]
    assert probe.instruments.requests_in_flight == 0
