"""CORS with an exact allow-list (SEC-61).

- An origin is allowed only if it equals a configured one (scheme, host and
  port; scheme and host compared lower-case, default ports dropped from the
  configuration). No prefix, suffix or pattern matching; ``null`` is never
  allowed; ``http://a`` is not ``https://a``.
- ``*`` means any origin, without credentials: ``*`` together with
  ``allow_credentials`` is a :class:`~keel.errors.ConfigurationError` when the
  middleware is built, and the response then says ``*``, never the origin.
- With an explicit list every response carries ``Vary: Origin`` (the answer
  depends on it), ``Access-Control-Allow-Origin`` echoes only an allowed
  origin, and ``Access-Control-Allow-Credentials: true`` is sent only when
  configured. ``Access-Control-*`` headers set by the application are removed.
- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
  is answered here and never reaches the application: 204 with the allowed
  methods, headers and max-age when the origin, method and every requested
  header are allowed; otherwise a 403 problem (``cors_preflight_rejected``)
  with no ``Access-Control-Allow-*`` headers at all.
- With no origins configured CORS is off: nothing is added, and preflights go
  to the application like any ``OPTIONS`` request (normally 405).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.api.problems import send_problem
from keel.errors import ConfigurationError
from keel.settings import CorsSettings

__all__ = ["DEFAULT_ALLOW_HEADERS", "DEFAULT_ALLOW_METHODS", "CorsMiddleware", "normalise_origin"]

DEFAULT_ALLOW_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_ALLOW_HEADERS: Final = (
    "Accept",
    "Accept-Language",
    "Authorization",
    "Content-Language",
    "Content-Type",
    "Idempotency-Key",
    "X-Request-ID",
)
DEFAULT_EXPOSE_HEADERS: Final = ("X-Request-ID", "Retry-After")

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_PREFLIGHT_VARY: Final = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def normalise_origin(origin: str) -> str:
    """``scheme://host[:port]`` lower-cased, default port dropped; ``ValueError`` otherwise."""
    text = origin.strip().rstrip("/")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an origin: {origin!r}")
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"not an origin: {origin!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not an origin: {origin!r}") from exc
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _headers(scope: Scope, wanted: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == wanted]


def _merge_vary(headers: list[tuple[bytes, bytes]], value: str) -> list[tuple[bytes, bytes]]:
    existing = [v.decode("latin-1") for k, v in headers if k == b"vary"]
    names = [n.strip() for v in existing for n in v.split(",") if n.strip()]
    lowered = {n.lower() for n in names}
    if "*" not in lowered:
        names.extend(n for n in (p.strip() for p in value.split(",")) if n.lower() not in lowered)
    out = [h for h in headers if h[0] != b"vary"]
    out.append((b"vary", ", ".join(names).encode("latin-1")))
    return out


class CorsMiddleware:
    """Answer CORS preflights and label responses for the configured origins only."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: CorsSettings,
        allow_methods: Iterable[str] = DEFAULT_ALLOW_METHODS,
        allow_headers: Iterable[str] = DEFAULT_ALLOW_HEADERS,
        expose_headers: Iterable[str] = DEFAULT_EXPOSE_HEADERS,
    ) -> None:
        self.app = app
        configured = [o.strip() for o in settings.origins if o.strip()]
        self.wildcard = "*" in configured
        if self.wildcard and settings.allow_credentials:
            raise ConfigurationError(
                "CORS origin '*' cannot be combined with credentials; list the origins",
                code="cors_wildcard_credentials",
            )
        origins: set[str] = set()
        for origin in configured:
            if origin == "*":
                continue
            if origin.lower() == "null":
                raise ConfigurationError("CORS origin 'null' is never allowed", code="cors_null")
            try:
                origins.add(normalise_origin(origin))
            except ValueError as exc:
                raise ConfigurationError(
                    "CORS origins must be scheme://host[:port]", code="cors_origin_invalid"
                ) from exc
        self.origins = frozenset(origins)
        self.enabled = self.wildcard or bool(self.origins)
        self.allow_credentials = settings.allow_credentials
        self.max_age = settings.max_age
        self.allow_methods = tuple(m.upper() for m in allow_methods)
        self.allow_headers = tuple(allow_headers)
        self._allowed_header_names = frozenset(h.lower() for h in self.allow_headers)
        self._expose = ", ".join(expose_headers)

    def is_allowed(self, origin: str) -> bool:
        """Whether a request ``Origin`` value may read responses."""
        if self.wildcard:
            return True
        return origin.lower() in self.origins

    def _allow_origin_value(self, origin: str) -> bytes:
        return b"*" if self.wildcard else origin.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        origins = _headers(scope, b"origin")
        origin = origins[0] if len(origins) == 1 else None
        if (
            scope.get("method") == "OPTIONS"
            and origins
            and _headers(scope, b"access-control-request-method")
        ):
            await self._preflight(scope, send, origin)
            return

        allowed = origin is not None and self.is_allowed(origin)

        async def send_labelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k.lower(), v)
                    for k, v in message.get("headers", ())
                    if not k.lower().startswith(b"access-control-")
                ]
                if not self.wildcard:
                    headers = _merge_vary(headers, "Origin")
                if allowed and origin is not None:
                    headers.append(
                        (b"access-control-allow-origin", self._allow_origin_value(origin))
                    )
                    if self.allow_credentials:
                        headers.append((b"access-control-allow-credentials", b"true"))
                    if self._expose:
                        headers.append(
                            (b"access-control-expose-headers", self._expose.encode("latin-1"))
                        )
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_labelled)

    async def _preflight(self, scope: Scope, send: Send, origin: str | None) -> None:
        vary = ("Vary", _PREFLIGHT_VARY)
        method = _headers(scope, b"access-control-request-method")[0].strip().upper()
        requested = {
            name.strip().lower()
            for value in _headers(scope, b"access-control-request-headers")
            for name in value.split(",")
            if name.strip()
        }
        if (
            origin is None
            or not self.is_allowed(origin)
            or method not in self.allow_methods
            or not requested <= self._allowed_header_names
        ):
            await send_problem(
                send,
                scope,
                403,
                "cors_preflight_rejected",
                detail="This cross-origin request is not allowed.",
                headers=(vary,),
            )
            return
        headers: list[tuple[bytes, bytes]] = [
            (b"access-control-allow-origin", self._allow_origin_value(origin)),
            (b"access-control-allow-methods", ", ".join(self.allow_methods).encode("latin-1")),
            (b"access-control-allow-headers", ", ".join(self.allow_headers).encode("latin-1")),
            (b"access-control-max-age", str(self.max_age).encode("latin-1")),
            (b"vary", _PREFLIGHT_VARY.encode("latin-1")),
        ]
        if self.allow_credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
