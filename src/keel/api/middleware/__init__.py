"""keel's ASGI middleware stack and :func:`install_middleware`.

Outermost first::

    TrustedProxyMiddleware      client IP / scheme from trusted proxies only
    RequestMetricsMiddleware    request count / latency by route template (when metrics are on)
    RequestContextMiddleware    request id, access log line
    SecurityHeadersMiddleware   security headers on every response
    LimitsMiddleware            framing, body size (413), JSON members/depth (400), deadline (504)
    CorsMiddleware              exact allow-list, preflights
    UnhandledErrorMiddleware    anything escaping the routes → generic 500
    (FastAPI's exception handlers and routers)

Security headers sit outside the limits and CORS so that 413, 504 and
preflight answers carry them too; the request context sits outside everything
that can answer, so every response has an ``X-Request-ID`` and one access line.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from keel.api.middleware.cors import CorsMiddleware
from keel.api.middleware.limits import (
    LimitsMiddleware,
    RequestBodyTooComplex,
    RequestBodyTooLarge,
)
from keel.api.middleware.metrics import RequestMetricsMiddleware
from keel.api.middleware.proxy import TrustedProxyMiddleware
from keel.api.middleware.request_context import RequestContextMiddleware
from keel.api.middleware.security_headers import (
    SecurityHeadersMiddleware,
    mark_no_store,
    no_store,
)
from keel.api.middleware.unhandled import UnhandledErrorMiddleware
from keel.api.problems import get_request_id
from keel.metrics import Instruments
from keel.security.headers import HeaderPolicy
from keel.settings import HttpSettings

__all__ = [
    "CorsMiddleware",
    "LimitsMiddleware",
    "RequestBodyTooComplex",
    "RequestBodyTooLarge",
    "RequestContextMiddleware",
    "RequestMetricsMiddleware",
    "SecurityHeadersMiddleware",
    "TrustedProxyMiddleware",
    "UnhandledErrorMiddleware",
    "docs_paths",
    "get_request_id",
    "install_middleware",
    "mark_no_store",
    "no_store",
]


def docs_paths(app: FastAPI) -> frozenset[str]:
    """The documentation pages ``app`` serves (Swagger UI, its OAuth2 redirect, ReDoc)."""
    paths: set[str] = set()
    if app.docs_url:
        paths.add(app.docs_url)
        if app.swagger_ui_oauth2_redirect_url:
            paths.add(app.swagger_ui_oauth2_redirect_url)
    if app.redoc_url:
        paths.add(app.redoc_url)
    return frozenset(paths)


def install_middleware(
    app: FastAPI,
    settings: HttpSettings,
    *,
    logger: logging.Logger,
    instruments: Instruments | None = None,
) -> None:
    """Add keel's middlewares to ``app`` in the order above.

    ``instruments`` (``keel.metrics.active()``) turns the request metrics on; it sits
    inside the trusted-proxy middleware, which copies the scope, so that it sees the
    route the router leaves there.

    ``logger`` receives the access lines, deadline warnings and unhandled
    errors. The docs pages get their relaxed CSP only if ``settings.docs_enabled``.
    Call it after the ``FastAPI(...)`` constructor (it reads the docs URLs from it).
    """
    policy = HeaderPolicy(
        hsts_max_age=settings.hsts_max_age,
        relaxed_csp_paths=docs_paths(app) if settings.docs_enabled else frozenset(),
    )
    # add_middleware wraps: the last one added is the outermost.
    app.add_middleware(UnhandledErrorMiddleware, logger=logger)
    app.add_middleware(CorsMiddleware, settings=settings.cors)
    app.add_middleware(
        LimitsMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_auth_body_bytes=settings.max_auth_body_bytes,
        max_json_members=settings.max_json_members,
        max_json_depth=settings.max_json_depth,
        timeout=settings.request_timeout,
        logger=logger,
    )
    app.add_middleware(SecurityHeadersMiddleware, policy=policy)
    app.add_middleware(RequestContextMiddleware, logger=logger)
    if instruments is not None:
        app.add_middleware(RequestMetricsMiddleware, instruments=instruments)
    app.add_middleware(
        TrustedProxyMiddleware,
        trusted=settings.trusted_proxies,
        trust_all=settings.trust_all_proxies,
        require_https=settings.require_https,
    )
