"""Client address and scheme from trusted proxies only (SEC-16, SEC-57).

Only when the direct peer (``scope["client"]``) is inside a trusted network are
``X-Forwarded-For`` and ``X-Forwarded-Proto`` read at all; otherwise the scope
is left exactly as the server built it.

The client is the right-most ``X-Forwarded-For`` hop that is not itself a
trusted proxy: walking from the right, each trusted hop is stepped over; the
first untrusted one is the client. A malformed entry stops the walk and the
last good address (or the peer) is kept. If every hop is trusted, the
left-most one is the client. The scheme is the last ``X-Forwarded-Proto``
value when it is ``http`` or ``https``.

``trust_all=True`` (``KEEL_TRUSTED_PROXIES=*``) trusts the direct peer whatever
its address, but still walks hops against ``trusted`` only; with no networks
configured the client is then the right-most hop, which the proxy wrote,
never the left-most, which the caller wrote.

A trusted peer is marked in the scope (``TRUSTED_PEER_KEY``): the request-context
middleware keeps an incoming ``X-Request-ID`` only then.

With ``require_https`` (production), a request that a trusted proxy says came
over plain HTTP (``X-Forwarded-Proto: http``) is marked
(``PLAINTEXT_FORWARDED_KEY``) and refused with ``403`` ``https_required`` by
the limits middleware, inside the request id and security headers; never
redirected (SEC-60): a redirect would invite the
client to send its credentials in clear text first and follow later.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "PLAINTEXT_FORWARDED_KEY",
    "TRUSTED_PEER_KEY",
    "TrustedProxyMiddleware",
    "parse_forwarded_ip",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_XFF: Final = b"x-forwarded-for"
_XFP: Final = b"x-forwarded-proto"
_XRID: Final = b"x-request-id"
_SCHEMES: Final = frozenset({"http", "https"})
#: Scope key set to ``True`` when the direct peer is a trusted proxy.
TRUSTED_PEER_KEY: Final = "keel.trusted_peer"
#: Scope key set when a trusted proxy says the request came over plain HTTP (SEC-60).
PLAINTEXT_FORWARDED_KEY: Final = "keel.plaintext_forwarded"
_MAX_HOPS: Final = 64


def _normalise(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_forwarded_ip(entry: str) -> IPAddress | None:
    """One ``X-Forwarded-For`` entry as an address.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``::1`` and ``[::1]:80``; IPv4-mapped IPv6
    addresses come back as IPv4.

    Returns ``None`` for anything else (``unknown``, host names, garbage).
    """
    text = entry.strip()
    if not text or len(text) > 64:
        return None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        text = host
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        return _normalise(ipaddress.ip_address(text))
    except ValueError:
        return None


def _header_values(scope: Scope, wanted: bytes) -> list[str]:
    return [
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name.lower() == wanted
    ]


_FORWARDED: Final = frozenset({_XFF, _XFP, _XRID})


class TrustedProxyMiddleware:
    """Rewrite ``scope["client"]`` and ``scope["scheme"]`` from a trusted proxy's headers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted: Sequence[IPNetwork],
        trust_all: bool = False,
        require_https: bool = False,
    ) -> None:
        self.app = app
        self.trusted = tuple(trusted)
        self.trust_all = trust_all
        self.require_https = require_https

    def is_trusted(self, ip: IPAddress) -> bool:
        return any(ip in network for network in self.trusted)

    def client_ip(self, peer: IPAddress, forwarded_for: Iterable[str]) -> IPAddress:
        """The client address for a trusted ``peer`` given the ``X-Forwarded-For`` values."""
        entries = [part for value in forwarded_for for part in value.split(",")]
        client = peer
        for entry in reversed(entries[-_MAX_HOPS:]):
            hop = parse_forwarded_ip(entry)
            if hop is None:
                break
            client = hop
            if not self.is_trusted(hop):
                break
        return client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not any(name.lower() in _FORWARDED for name, _ in scope.get("headers", ())):
            # Nothing forwarded, no request id: nothing to trust or parse (the common case).
            await self.app(scope, receive, send)
            return
        peer_addr = scope.get("client")
        peer = parse_forwarded_ip(str(peer_addr[0])) if peer_addr else None
        if peer is None or not (self.trust_all or self.is_trusted(peer)):
            await self.app(scope, receive, send)
            return

        scope = dict(scope)
        scope[TRUSTED_PEER_KEY] = True
        forwarded_for = _header_values(scope, _XFF)
        if forwarded_for:
            client = self.client_ip(peer, forwarded_for)
            if client != peer:
                scope["client"] = (str(client), 0)
        protos = [p.strip().lower() for v in _header_values(scope, _XFP) for p in v.split(",")]
        protos = [p for p in protos if p]
        if protos and protos[-1] in _SCHEMES:
            scope["scheme"] = protos[-1]
            if self.require_https and protos[-1] == "http":
                scope[PLAINTEXT_FORWARDED_KEY] = True  # refused inside, by LimitsMiddleware
        await self.app(scope, receive, send)
