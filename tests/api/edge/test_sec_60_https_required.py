"""SEC-60: in production, a request forwarded from plain HTTP is refused, never redirected."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi import FastAPI

from keel.settings import Settings
from tests.api.edge._app import TRUSTED_PEER, UNTRUSTED_PEER, build_app, client, http_settings


def _production_edge() -> FastAPI:
    return build_app(dataclasses.replace(http_settings(), require_https=True))


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_sec_60_forwarded_plain_http_is_refused_not_redirected(method: str) -> None:
    async with client(_production_edge(), peer=TRUSTED_PEER) as http:
        response = await http.request(method, "/ok", headers={"X-Forwarded-Proto": "http"})
    assert response.status_code == 403
    assert "location" not in response.headers
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "https_required"
    assert response.headers["x-content-type-options"] == "nosniff"  # SEC-56 still holds
    assert response.headers["cache-control"] == "no-store"
    assert len(response.headers["x-request-id"]) == 32


async def test_sec_60_forwarded_https_and_direct_requests_are_served() -> None:
    app = _production_edge()
    async with client(app, peer=TRUSTED_PEER) as http:
        assert (await http.get("/ok", headers={"X-Forwarded-Proto": "https"})).status_code == 200
    # No trusted proxy said anything: a direct request (a health check) is not refused;
    # an untrusted caller's X-Forwarded-Proto is ignored, as every forwarded header is.
    async with client(app, peer=UNTRUSTED_PEER) as http:
        assert (await http.get("/ok")).status_code == 200
        assert (await http.get("/ok", headers={"X-Forwarded-Proto": "http"})).status_code == 200


async def test_sec_60_development_serves_forwarded_plain_http() -> None:
    async with client(build_app(http_settings()), peer=TRUSTED_PEER) as http:
        assert (await http.get("/ok", headers={"X-Forwarded-Proto": "http"})).status_code == 200


def test_sec_60_production_settings_require_https() -> None:
    assert Settings(env="production").http.require_https
    assert not Settings(env="development").http.require_https
