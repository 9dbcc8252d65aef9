"""keel.security.headers: the pure header policy (SEC-56..59)."""

from __future__ import annotations

import re

import pytest

from keel.security.headers import (
    API_CSP,
    BASE_HEADERS,
    DOCS_CSP,
    PERMISSIONS_POLICY,
    HeaderPolicy,
)

RawHeaders = list[tuple[bytes, bytes]]


def _as_dict(headers: RawHeaders) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers:
        out.setdefault(name.decode(), []).append(value.decode())
    return out


def test_sec_56_required_headers_and_values() -> None:
    applied = _as_dict(HeaderPolicy().apply([], path="/users/me", https=False))
    assert applied["x-content-type-options"] == ["nosniff"]
    assert applied["content-security-policy"] == [
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ]
    assert applied["referrer-policy"] == ["no-referrer"]
    assert applied["cross-origin-resource-policy"] == ["same-origin"]
    assert applied["cross-origin-opener-policy"] == ["same-origin"]
    assert applied["x-frame-options"] == ["DENY"]
    assert applied["permissions-policy"] == [PERMISSIONS_POLICY]


def test_sec_56_permissions_policy_allowlists_are_all_empty() -> None:
    features = [part.strip() for part in PERMISSIONS_POLICY.split(",")]
    assert {"camera=()", "microphone=()", "geolocation=()", "payment=()", "usb=()"} <= set(features)
    assert all(re.fullmatch(r"[a-z-]+=\(\)", feature) for feature in features)


def test_sec_56_policy_replaces_what_the_app_set() -> None:
    app_headers: RawHeaders = [
        (b"X-Frame-Options", b"ALLOWALL"),
        (b"content-security-policy", b"default-src *"),
        (b"content-type", b"application/json"),
    ]
    applied = _as_dict(HeaderPolicy().apply(app_headers, path="/", https=False))
    assert applied["x-frame-options"] == ["DENY"]
    assert applied["content-security-policy"] == [API_CSP]
    assert applied["content-type"] == ["application/json"]


@pytest.mark.parametrize("name", [b"Server", b"server", b"X-Powered-By", b"x-powered-by"])
def test_sec_59_fingerprinting_headers_are_removed(name: bytes) -> None:
    applied = _as_dict(HeaderPolicy().apply([(name, b"uvicorn")], path="/", https=False))
    assert "server" not in applied
    assert "x-powered-by" not in applied


def test_sec_57_hsts_only_over_https() -> None:
    policy = HeaderPolicy(hsts_max_age=31_536_000)
    plain = _as_dict(policy.apply([], path="/", https=False))
    secure = _as_dict(policy.apply([], path="/", https=True))
    assert "strict-transport-security" not in plain
    assert secure["strict-transport-security"] == ["max-age=31536000; includeSubDomains"]


def test_sec_57_app_cannot_set_its_own_hsts_over_http() -> None:
    applied = _as_dict(
        HeaderPolicy().apply([(b"strict-transport-security", b"max-age=1")], path="/", https=False)
    )
    assert "strict-transport-security" not in applied


def test_hsts_zero_sends_none_and_subdomains_optional() -> None:
    assert "strict-transport-security" not in _as_dict(
        HeaderPolicy(hsts_max_age=0).apply([], path="/", https=True)
    )
    applied = _as_dict(
        HeaderPolicy(hsts_max_age=60, include_subdomains=False).apply([], path="/", https=True)
    )
    assert applied["strict-transport-security"] == ["max-age=60"]


def test_sec_58_no_store_by_default() -> None:
    applied = _as_dict(HeaderPolicy().apply([], path="/", https=False))
    assert applied["cache-control"] == ["no-store"]


def test_sec_58_own_cache_control_is_kept_unless_marked() -> None:
    own: RawHeaders = [(b"Cache-Control", b"public, max-age=60")]
    kept = _as_dict(HeaderPolicy().apply(own, path="/", https=False))
    forced = _as_dict(HeaderPolicy().apply(own, path="/", https=False, no_store=True))
    assert kept["cache-control"] == ["public, max-age=60"]
    assert forced["cache-control"] == ["no-store"]


def test_docs_csp_only_on_listed_paths() -> None:
    policy = HeaderPolicy(relaxed_csp_paths=frozenset({"/docs"}))
    assert policy.csp_for("/docs") == DOCS_CSP
    assert policy.csp_for("/docs/") == API_CSP
    assert policy.csp_for("/docsx") == API_CSP
    assert policy.csp_for("/users/me") == API_CSP
    assert HeaderPolicy().csp_for("/docs") == API_CSP


def test_docs_csp_stays_closed_where_docs_do_not_need_it() -> None:
    directives = dict(
        (part.split()[0], part.split()[1:]) for part in DOCS_CSP.split(";") if part.strip()
    )
    assert directives["default-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert "'unsafe-eval'" not in DOCS_CSP
    assert "*" not in DOCS_CSP.split()


def test_headers_for_lists_the_policy() -> None:
    names = [name for name, _ in HeaderPolicy().headers_for(path="/", https=True)]
    for name, _ in BASE_HEADERS:
        assert name.lower() in names
    assert "strict-transport-security" in names
    assert "content-security-policy" in names


@pytest.mark.parametrize(
    "kwargs",
    [{"hsts_max_age": -1}, {"relaxed_csp_paths": frozenset({"docs"})}],
)
def test_bad_policy_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"hsts_max_age|relaxed_csp_paths"):
        HeaderPolicy(**kwargs)  # type: ignore[arg-type]


def test_security_package_exports_the_policy() -> None:
    import keel.security

    assert keel.security.HeaderPolicy is HeaderPolicy
