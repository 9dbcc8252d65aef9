"""SEC-61: CORS answers only exact allow-listed origins."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from keel.api.middleware import CorsMiddleware
from keel.api.middleware.cors import normalise_origin
from keel.errors import ConfigurationError
from keel.settings import CorsSettings
from tests.api.edge._app import ALLOWED_ORIGIN, Probe, build_app, client, http_settings

BAD_ORIGINS = [
    "https://evil.example",
    "null",
    "https://app.example.com.evil.example",  # suffix appended
    "https://evilapp.example.com",  # prefix
    "https://evil.app.example.com",  # subdomain
    "https://app.example.co",  # truncated
    "http://app.example.com",  # plaintext variant
    "https://app.example.com:8443",  # other port
    "https://app.example.com/",  # not an origin serialisation
    "https://app.example.com, https://evil.example",
    "*",
    "",
]


def _vary(headers: object) -> list[str]:
    assert hasattr(headers, "get_list")
    return [v.strip().lower() for line in headers.get_list("vary") for v in line.split(",")]


def _preflight(origin: str, method: str = "POST", headers: str | None = None) -> dict[str, str]:
    out = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        out["Access-Control-Request-Headers"] = headers
    return out


async def test_sec_61_allowed_origin_simple_request(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.get("/ok", headers={"Origin": ALLOWED_ORIGIN})
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "origin" in _vary(response.headers)
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


async def test_sec_61_allowed_origin_on_error_responses(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.get("/boom", headers={"Origin": ALLOWED_ORIGIN})
    assert response.status_code == 500
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


@pytest.mark.parametrize("origin", BAD_ORIGINS)
async def test_sec_61_other_origins_get_no_acao_on_simple_requests(
    app: FastAPI, origin: str
) -> None:
    async with client(app) as http:
        response = await http.get("/ok", headers={"Origin": origin})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-credentials" not in response.headers
    assert "origin" in _vary(response.headers)


@pytest.mark.parametrize("origin", BAD_ORIGINS)
async def test_sec_61_other_origins_get_no_acao_on_preflight(
    app: FastAPI, probe: Probe, origin: str
) -> None:
    async with client(app) as http:
        response = await http.options("/ok", headers=_preflight(origin))
    assert response.status_code == 403
    assert response.json()["code"] == "cors_preflight_rejected"
    assert not [h for h in response.headers if h.startswith("access-control-")]
    assert "origin" in _vary(response.headers)
    assert probe.called == []


async def test_sec_61_allowed_preflight(app: FastAPI, probe: Probe) -> None:
    async with client(app) as http:
        response = await http.options(
            "/ok", headers=_preflight(ALLOWED_ORIGIN, "PATCH", "content-type, authorization")
        )
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "PATCH" in response.headers["access-control-allow-methods"]
    assert "Authorization" in response.headers["access-control-allow-headers"]
    assert response.headers["access-control-max-age"] == "600"
    assert {"origin", "access-control-request-method"} <= set(_vary(response.headers))
    assert probe.called == []  # answered by the middleware


@pytest.mark.parametrize(
    ("method", "headers"),
    [("TRACE", None), ("CONNECT", None), ("POST", "x-evil"), ("POST", "content-type, cookie")],
)
async def test_sec_61_preflight_for_undeclared_method_or_header_is_refused(
    app: FastAPI, method: str, headers: str | None
) -> None:
    async with client(app) as http:
        response = await http.options("/ok", headers=_preflight(ALLOWED_ORIGIN, method, headers))
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


async def test_sec_61_credentials_only_when_configured() -> None:
    app = build_app(http_settings(allow_credentials=False))
    async with client(app) as http:
        simple = await http.get("/ok", headers={"Origin": ALLOWED_ORIGIN})
        preflight = await http.options("/ok", headers=_preflight(ALLOWED_ORIGIN))
    assert simple.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "access-control-allow-credentials" not in simple.headers
    assert preflight.status_code == 204
    assert "access-control-allow-credentials" not in preflight.headers


async def test_sec_61_app_set_cors_headers_are_replaced(app: FastAPI) -> None:
    async with client(app) as http:
        evil = await http.get("/cors-greedy", headers={"Origin": "https://evil.example"})
        good = await http.get("/cors-greedy", headers={"Origin": ALLOWED_ORIGIN})
    assert "access-control-allow-origin" not in evil.headers
    assert "access-control-allow-credentials" not in evil.headers
    assert good.headers.get_list("access-control-allow-origin") == [ALLOWED_ORIGIN]


async def test_sec_61_vary_origin_even_without_origin(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.get("/ok")
    assert _vary(response.headers) == ["origin"]


async def test_sec_61_configured_origin_is_normalised() -> None:
    app = build_app(http_settings(origins=("HTTPS://App.Example.COM:443/",)))
    async with client(app) as http:
        response = await http.get("/ok", headers={"Origin": ALLOWED_ORIGIN})
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


async def test_sec_61_non_default_port_must_match_exactly() -> None:
    app = build_app(http_settings(origins=("http://localhost:3000",)))
    async with client(app) as http:
        exact = await http.get("/ok", headers={"Origin": "http://localhost:3000"})
        other = await http.get("/ok", headers={"Origin": "http://localhost:3001"})
        bare = await http.get("/ok", headers={"Origin": "http://localhost"})
    assert exact.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in bare.headers


async def test_sec_61_wildcard_without_credentials_says_star() -> None:
    app = build_app(http_settings(origins=("*",), allow_credentials=False))
    async with client(app) as http:
        simple = await http.get("/ok", headers={"Origin": "https://anyone.example"})
        preflight = await http.options("/ok", headers=_preflight("https://anyone.example"))
    assert simple.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in simple.headers
    assert preflight.headers["access-control-allow-origin"] == "*"


def test_sec_61_wildcard_with_credentials_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        CorsMiddleware(
            build_app(),
            settings=CorsSettings(origins=("*",), allow_credentials=True, max_age=0),
        )
    assert caught.value.code == "cors_wildcard_credentials"


@pytest.mark.parametrize(
    "origin", ["null", "NULL", "app.example.com", "ftp://x.example", "https://x.example/path"]
)
def test_sec_61_bad_configured_origins_are_refused(origin: str) -> None:
    with pytest.raises(ConfigurationError):
        CorsMiddleware(
            build_app(),
            settings=CorsSettings(origins=(origin,), allow_credentials=False, max_age=0),
        )


async def test_cors_off_when_no_origins_configured(probe: Probe) -> None:
    app = build_app(http_settings(origins=()), probe=probe)
    async with client(app) as http:
        simple = await http.get("/ok", headers={"Origin": ALLOWED_ORIGIN})
        preflight = await http.options("/ok", headers=_preflight(ALLOWED_ORIGIN))
    assert not [h for h in simple.headers if h.startswith("access-control-")]
    assert "vary" not in simple.headers
    assert preflight.status_code == 405  # the router's answer to OPTIONS
    assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://a.example", "https://a.example"),
        ("https://a.example/", "https://a.example"),
        ("HTTPS://A.EXAMPLE:443", "https://a.example"),
        ("http://a.example:80", "http://a.example"),
        ("http://a.example:8080", "http://a.example:8080"),
        ("https://[2001:DB8::1]:8443", "https://[2001:db8::1]:8443"),
    ],
)
def test_normalise_origin(raw: str, expected: str) -> None:
    assert normalise_origin(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["a.example", "https://", "https://u@a.example", "https://a.example:99999", "https://a?x"],
)
def test_normalise_origin_refuses_non_origins(raw: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        normalise_origin(raw)
