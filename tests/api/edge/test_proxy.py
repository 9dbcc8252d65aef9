"""SEC-16: the client address and scheme come from trusted proxies only."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from fastapi import FastAPI

from keel.api.middleware.proxy import TrustedProxyMiddleware, parse_forwarded_ip
from tests.api.edge._app import (
    TRUSTED,
    TRUSTED_PEER,
    UNTRUSTED_PEER,
    build_app,
    call_asgi,
    client,
    http_settings,
    make_scope,
)

NETWORKS = tuple(ipaddress.ip_network(n) for n in TRUSTED)


async def _whoami(app: FastAPI, peer: tuple[str, int], headers: dict[str, str]) -> dict[str, Any]:
    async with client(app, peer=peer) as http:
        response = await http.get("/whoami", headers=headers)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_sec_16_untrusted_peer_cannot_forge_client_ip(app: FastAPI) -> None:
    seen = await _whoami(
        app, UNTRUSTED_PEER, {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"}
    )
    assert seen["client"] == "10.9.9.9"
    assert seen["scheme"] == "http"


async def test_sec_16_trusted_peer_gives_right_most_untrusted_hop(app: FastAPI) -> None:
    seen = await _whoami(app, TRUSTED_PEER, {"X-Forwarded-For": "6.6.6.6, 5.5.5.5"})
    assert seen["client"] == "5.5.5.5"


async def test_sec_16_trusted_peer_scheme_from_forwarded_proto(app: FastAPI) -> None:
    seen = await _whoami(
        app, TRUSTED_PEER, {"X-Forwarded-For": "5.5.5.5", "X-Forwarded-Proto": "https"}
    )
    assert seen == {**seen, "client": "5.5.5.5", "scheme": "https"}


@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        # one proxy: the hop it appended
        (["6.6.6.6, 5.5.5.5"], "5.5.5.5"),
        # a chain of trusted proxies is stepped over
        (["1.1.1.1, 7.7.7.7, 10.1.2.3, 10.1.4.5"], "7.7.7.7"),
        (["7.7.7.7", "10.1.2.3", "10.1.4.5"], "7.7.7.7"),  # several header lines
        (["7.7.7.7,10.1.2.3 ,  127.0.0.1"], "7.7.7.7"),
        # every hop trusted: the left-most
        (["10.1.9.9, 10.1.2.3"], "10.1.9.9"),
        # IPv6, bracketed, with ports, IPv4-mapped
        (["2001:db8::1"], "2001:db8::1"),
        (["2001:db8::1, fd00::7"], "2001:db8::1"),
        (["[2001:db8::2]:4711"], "2001:db8::2"),
        (["8.8.8.8:5555"], "8.8.8.8"),
        (["::ffff:8.8.4.4"], "8.8.4.4"),
        # malformed: stop and keep the last good address
        (["garbage"], "10.1.0.5"),
        (["5.5.5.5, garbage"], "10.1.0.5"),
        (["garbage, 5.5.5.5"], "5.5.5.5"),
        (["5.5.5.5, unknown, 10.1.2.3"], "10.1.2.3"),
        (["5.5.5.5, 10.1.2.3, 999.1.1.1"], "10.1.0.5"),
        ([""], "10.1.0.5"),
        ([" , "], "10.1.0.5"),
        (["example.com"], "10.1.0.5"),
        (["1.2.3.4:port"], "10.1.0.5"),
        (["[::1"], "10.1.0.5"),
    ],
)
def test_sec_16_client_ip_walk(forwarded_for: list[str], expected: str) -> None:
    middleware = TrustedProxyMiddleware(_never_called, trusted=NETWORKS)
    peer = ipaddress.ip_address("10.1.0.5")
    assert str(middleware.client_ip(peer, forwarded_for)) == expected


async def _never_called(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    raise AssertionError("not called")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:80", "1.2.3.4"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[::1]:443", "::1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("unknown", None),
        ("_hidden", None),
        ("1.2.3", None),
        ("1.2.3.4:", None),
        ("[::1]x", None),
        ("[::1]:x", None),
        ("1" * 100, None),
        ("", None),
    ],
)
def test_parse_forwarded_ip(entry: str, expected: str | None) -> None:
    parsed = parse_forwarded_ip(entry)
    assert (str(parsed) if parsed is not None else None) == expected


async def _scope_seen(**kwargs: Any) -> dict[str, Any]:
    """The scope the application behind the middleware gets."""
    seen: dict[str, Any] = {}

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await call_asgi(TrustedProxyMiddleware(inner, trusted=NETWORKS), make_scope(**kwargs))
    return seen


@pytest.mark.parametrize(
    ("proto_headers", "expected"),
    [
        ([("X-Forwarded-Proto", "https")], "https"),
        ([("X-Forwarded-Proto", "HTTPS")], "https"),
        ([("X-Forwarded-Proto", "http, https")], "https"),
        ([("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")], "http"),
        ([("X-Forwarded-Proto", "https, gopher")], "http"),
        ([("X-Forwarded-Proto", "wss")], "http"),
        ([("X-Forwarded-Proto", "")], "http"),
    ],
)
async def test_sec_16_forwarded_proto_last_value_http_or_https(
    proto_headers: list[tuple[str, str]], expected: str
) -> None:
    seen = await _scope_seen(headers=proto_headers, client=TRUSTED_PEER)
    assert seen["scheme"] == expected


async def test_sec_16_untrusted_peer_scope_untouched() -> None:
    seen = await _scope_seen(
        headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")],
        client=UNTRUSTED_PEER,
    )
    assert seen["client"] == UNTRUSTED_PEER
    assert seen["scheme"] == "http"


async def test_sec_16_no_client_in_scope_is_left_alone() -> None:
    seen = await _scope_seen(headers=[("X-Forwarded-For", "1.2.3.4")], client=None)
    assert seen["client"] is None


async def test_sec_16_ipv6_trusted_peer() -> None:
    seen = await _scope_seen(
        headers=[("X-Forwarded-For", "2001:db8::9, fd00::1")], client=("fd00::2", 80)
    )
    assert seen["client"] == ("2001:db8::9", 0)


async def test_sec_16_ipv4_mapped_peer_is_matched_as_ipv4() -> None:
    seen = await _scope_seen(
        headers=[("X-Forwarded-For", "5.5.5.5")], client=("::ffff:10.1.0.5", 80)
    )
    assert seen["client"] == ("5.5.5.5", 0)


async def test_sec_16_trust_all_takes_the_hop_the_proxy_wrote() -> None:
    app = build_app(http_settings(trusted=(), trust_all=True))
    seen = await _whoami(app, ("203.0.113.9", 1), {"X-Forwarded-For": "1.2.3.4, 5.5.5.5"})
    assert seen["client"] == "5.5.5.5"


async def test_sec_16_no_trusted_networks_ignores_headers() -> None:
    app = build_app(http_settings(trusted=()))
    seen = await _whoami(app, ("127.0.0.1", 1), {"X-Forwarded-For": "1.2.3.4"})
    assert seen["client"] == "127.0.0.1"
