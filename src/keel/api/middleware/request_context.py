"""Request id, timing and the one access-log line per request.

An incoming ``X-Request-ID`` is kept only when the direct peer is a trusted
proxy (``TrustedProxyMiddleware`` marks it, as Envoy keeps only internal
callers' ids) and it is 1 to 128 characters of ``[A-Za-z0-9._:-]``; otherwise
a fresh one (uuid4 hex) is made, so no client chooses the id its audit rows
carry. The id is put
in ``scope["state"]["request_id"]`` (read it with :func:`get_request_id`), set
in ``keel._logging.request_id_var`` while the request runs (so every log line
carries it) and echoed as ``X-Request-ID`` on every response.

The access line is the ``http_request`` event with method, path (never the
query string: tokens must not reach logs, SEC-43), status, duration_ms,
client_ip, request_id and a truncated user agent. The JSON formatter escapes
control characters, so nothing in a path or user agent can forge a line (SEC-66).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel._clock import Clock, SystemClock
from keel._logging import event, request_id_var
from keel.api.middleware.proxy import TRUSTED_PEER_KEY
from keel.api.problems import REQUEST_ID_KEY, get_request_id

__all__ = ["REQUEST_ID_HEADER", "RequestContextMiddleware", "get_request_id", "new_request_id"]

REQUEST_ID_HEADER: Final = "X-Request-ID"
_HEADER: Final = b"x-request-id"
_SANE_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_USER_AGENT_MAX: Final = 256
_PATH_MAX: Final = 2048


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def _incoming_id(scope: Scope) -> str | None:
    if scope.get(TRUSTED_PEER_KEY) is not True:
        return None
    for name, value in scope.get("headers", ()):
        if name.lower() == _HEADER:
            text = value.decode("latin-1")
            return text if _SANE_ID.fullmatch(text) else None
    return None


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == wanted:
            return str(value.decode("latin-1"))
    return None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


class RequestContextMiddleware:
    """Give each HTTP request an id, echo it, and log one access line when it ends."""

    def __init__(self, app: ASGIApp, *, logger: logging.Logger, clock: Clock | None = None) -> None:
        self.app = app
        self.logger = logger
        self.clock = clock or SystemClock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _incoming_id(scope) or new_request_id()
        scope.setdefault("state", {})[REQUEST_ID_KEY] = request_id
        echoed = (_HEADER, request_id.encode("latin-1"))
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [h for h in message.get("headers", ()) if h[0].lower() != _HEADER]
                headers.append(echoed)
                message = {**message, "headers": headers}
            await send(message)

        token = request_id_var.set(request_id)
        started = self.clock.monotonic()
        failed = False
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            failed = True
            raise
        finally:
            if self.logger.isEnabledFor(logging.INFO):
                self._log(scope, request_id, status, failed, started)
            request_id_var.reset(token)

    def _log(
        self, scope: Scope, request_id: str, status: int | None, failed: bool, started: float
    ) -> None:
        duration_ms = (self.clock.monotonic() - started) * 1000.0
        client = scope.get("client")
        event(
            self.logger,
            logging.INFO,
            "http_request",
            method=scope.get("method"),
            path=_clip(str(scope.get("path", "")), _PATH_MAX),
            status=status if status is not None else (500 if failed else None),
            duration_ms=round(duration_ms, 3),
            client_ip=client[0] if client else None,
            request_id=request_id,
            user_agent=_clip(_header(scope, b"user-agent") or "", _USER_AGENT_MAX),
        )
