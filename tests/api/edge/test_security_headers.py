"""SEC-56..59: security headers on every response, HSTS over HTTPS only, no fingerprints."""

from __future__ import annotations

import re
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp

from keel.api.middleware import (
    CorsMiddleware,
    LimitsMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
    TrustedProxyMiddleware,
    UnhandledErrorMiddleware,
)
from keel.security.headers import API_CSP, DOCS_CSP, PERMISSIONS_POLICY, HeaderPolicy
from tests.api.edge._app import (
    ALLOWED_ORIGIN,
    MAX_BODY,
    TRUSTED_PEER,
    UNTRUSTED_PEER,
    LogCapture,
    build_app,
    call_asgi,
    client,
    http_settings,
    make_scope,
)

EXPECTED = {
    "x-content-type-options": "nosniff",
    "content-security-policy": API_CSP,
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "x-frame-options": "DENY",
    "permissions-policy": PERMISSIONS_POLICY,
}

# (label, request kwargs, expected status)
CASES: list[tuple[str, dict[str, Any], int]] = [
    ("200", {"method": "GET", "url": "/ok"}, 200),
    ("401", {"method": "GET", "url": "/unauthorized"}, 401),
    ("404", {"method": "GET", "url": "/nothing-here"}, 404),
    ("405", {"method": "PATCH", "url": "/ok"}, 405),
    ("405-trace", {"method": "TRACE", "url": "/ok"}, 405),
    ("413", {"method": "POST", "url": "/size", "content": b"x" * (MAX_BODY + 1)}, 413),
    ("415", {"method": "POST", "url": "/items", "content": b"{}", "headers": {}}, 415),
    ("422", {"method": "POST", "url": "/items", "json": {"name": 1}}, 422),
    ("500", {"method": "GET", "url": "/boom"}, 500),
    ("503", {"method": "GET", "url": "/domain/database"}, 503),
    ("504", {"method": "GET", "url": "/slow"}, 504),
    (
        "preflight-204",
        {
            "method": "OPTIONS",
            "url": "/ok",
            "headers": {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"},
        },
        204,
    ),
    (
        "preflight-403",
        {
            "method": "OPTIONS",
            "url": "/ok",
            "headers": {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        },
        403,
    ),
]


def assert_secure(headers: Mapping[str, str]) -> None:
    for name, value in EXPECTED.items():
        assert headers.get(name) == value, name
    assert "server" not in headers
    assert "x-powered-by" not in headers


@pytest.mark.parametrize(("label", "request_kwargs", "status"), CASES, ids=[c[0] for c in CASES])
async def test_sec_56_headers_on_every_response(
    app: FastAPI, label: str, request_kwargs: dict[str, Any], status: int
) -> None:
    async with client(app) as http:
        response = await http.request(**request_kwargs)
    assert response.status_code == status, response.text
    assert_secure(response.headers)
    assert response.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in response.headers


async def test_sec_56_headers_on_framing_refusals() -> None:
    exchange = await call_asgi(
        build_app(),
        make_scope(method="POST", headers=[("Transfer-Encoding", "chunked")], http_version="1.0"),
    )
    assert exchange.status == 400
    assert_secure(exchange.headers)


async def test_sec_56_app_cannot_weaken_headers(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.get("/fingerprint")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers.get_list("x-frame-options") == ["DENY"]


def _hsts_max_age(value: str) -> int:
    match = re.fullmatch(r"max-age=(\d+); includeSubDomains", value)
    assert match, value
    return int(match.group(1))


async def test_sec_57_hsts_via_trusted_proxy_https(app: FastAPI) -> None:
    async with client(app, peer=TRUSTED_PEER) as http:
        response = await http.get("/ok", headers={"X-Forwarded-Proto": "https"})
    assert _hsts_max_age(response.headers["strict-transport-security"]) >= 31_536_000


async def test_sec_57_hsts_on_https_error_responses(app: FastAPI) -> None:
    async with client(app, peer=TRUSTED_PEER) as http:
        for path in ("/missing", "/boom", "/slow"):
            response = await http.get(path, headers={"X-Forwarded-Proto": "https"})
            assert "strict-transport-security" in response.headers, path


async def test_sec_57_hsts_on_direct_https(app: FastAPI) -> None:
    async with client(app, base_url="https://testserver") as http:
        response = await http.get("/ok")
    assert _hsts_max_age(response.headers["strict-transport-security"]) == 31_536_000


@pytest.mark.parametrize(
    ("peer", "proto"),
    [(TRUSTED_PEER, None), (TRUSTED_PEER, "http"), (UNTRUSTED_PEER, "https")],
)
async def test_sec_57_no_hsts_over_http(
    app: FastAPI, peer: tuple[str, int], proto: str | None
) -> None:
    headers = {"X-Forwarded-Proto": proto} if proto else {}
    async with client(app, peer=peer) as http:
        response = await http.get("/ok", headers=headers)
    assert "strict-transport-security" not in response.headers


async def test_sec_57_hsts_off_when_max_age_zero() -> None:
    app = build_app(http_settings(hsts_max_age=0))
    async with client(app, base_url="https://testserver") as http:
        response = await http.get("/ok")
    assert "strict-transport-security" not in response.headers


async def test_sec_59_no_fingerprinting_headers(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.get("/fingerprint")
    assert "server" not in response.headers
    assert "x-powered-by" not in response.headers


async def test_sec_59_content_types(app: FastAPI) -> None:
    async with client(app) as http:
        ok = await http.get("/ok")
        missing = await http.get("/missing")
    assert ok.headers["content-type"] == "application/json"
    assert missing.headers["content-type"] == "application/problem+json"


async def test_sec_58_no_store_is_the_default(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.get("/ok")
    assert response.headers["cache-control"] == "no-store"


async def test_sec_58_route_may_choose_its_own_cache_control(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.get("/cached")
    assert response.headers.get_list("cache-control") == ["public, max-age=60"]


async def test_sec_58_sensitive_marker_forces_no_store(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.get("/private")
    assert response.headers.get_list("cache-control") == ["no-store"]


# --- docs -------------------------------------------------------------------------------------


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.scripts.append(str(found["src"]))
        if tag == "link" and found.get("rel") == "stylesheet" and found.get("href"):
            self.styles.append(str(found["href"]))


def _directive(csp: str, name: str) -> list[str]:
    for part in csp.split(";"):
        words = part.split()
        if words and words[0] == name:
            return words[1:]
    return []


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_get_the_relaxed_csp_that_lets_them_render(path: str) -> None:
    app = build_app(http_settings(docs_enabled=True), docs=True)
    async with client(app) as http:
        response = await http.get(path)
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert csp == DOCS_CSP
    assets = _Assets()
    assets.feed(response.text)
    assert assets.scripts
    for src in assets.scripts:
        assert _origin(src) in _directive(csp, "script-src"), src
    for href in assets.styles:
        assert _origin(href) in _directive(csp, "style-src"), href
    assert _directive(csp, "frame-ancestors") == ["'none'"]
    assert_secure({**response.headers, "content-security-policy": API_CSP})


async def test_docs_relaxation_is_for_docs_paths_only() -> None:
    app = build_app(http_settings(docs_enabled=True), docs=True)
    async with client(app) as http:
        spec = await http.get("/openapi.json")
        nested = await http.get("/docs/extra")
    assert spec.status_code == 200
    assert spec.headers["content-security-policy"] == API_CSP
    assert nested.headers["content-security-policy"] == API_CSP


async def test_docs_keep_the_strict_csp_when_docs_are_disabled() -> None:
    # The routes exist but the settings say docs are off: no exception is made.
    app = build_app(http_settings(docs_enabled=False), docs=True)
    async with client(app) as http:
        response = await http.get("/docs")
    assert response.headers["content-security-policy"] == API_CSP


async def test_lifespan_and_websocket_scopes_pass_through_untouched() -> None:
    settings = http_settings()
    logger = LogCapture().logger
    seen: list[tuple[object, object, object]] = []

    async def inner(scope: object, receive: object, send: object) -> None:
        seen.append((scope, receive, send))

    stack: list[ASGIApp] = [
        TrustedProxyMiddleware(inner, trusted=settings.trusted_proxies),
        RequestContextMiddleware(inner, logger=logger),
        SecurityHeadersMiddleware(inner, policy=HeaderPolicy()),
        LimitsMiddleware(inner, max_body_bytes=10, timeout=0.01),
        CorsMiddleware(inner, settings=settings.cors),
        UnhandledErrorMiddleware(inner, logger=logger),
    ]

    async def receive() -> dict[str, Any]:  # pragma: no cover
        return {}

    async def send(message: Any) -> None:  # pragma: no cover
        pass

    for kind in ("lifespan", "websocket"):
        for middleware in stack:
            seen.clear()
            scope = {
                "type": kind,
                "path": "/",
                "headers": [(b"x-forwarded-for", b"1.2.3.4")],
                "client": TRUSTED_PEER,
            }
            snapshot = dict(scope)
            await middleware(scope, receive, send)
            assert seen == [(scope, receive, send)], type(middleware).__name__
            assert scope == snapshot
