"""install_middleware puts the six middlewares in the documented order."""

from __future__ import annotations

from keel.api.middleware import (
    CorsMiddleware,
    LimitsMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
    TrustedProxyMiddleware,
    UnhandledErrorMiddleware,
    docs_paths,
)
from tests.api.edge._app import build_app


def test_order_outermost_first() -> None:
    app = build_app()
    classes: list[object] = [m.cls for m in app.user_middleware]
    assert classes == [
        TrustedProxyMiddleware,
        RequestContextMiddleware,
        SecurityHeadersMiddleware,
        LimitsMiddleware,
        CorsMiddleware,
        UnhandledErrorMiddleware,
    ]


def test_docs_paths_come_from_the_app() -> None:
    assert docs_paths(build_app(docs=True)) == {"/docs", "/docs/oauth2-redirect", "/redoc"}
    assert docs_paths(build_app(docs=False)) == frozenset()
