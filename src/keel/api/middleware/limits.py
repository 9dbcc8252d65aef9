"""Request framing, body size and a per-request deadline (SEC-51, SEC-63).

Before the application sees a request:

- a request the trusted proxy said came over plain HTTP, in production → 403
  ``https_required`` (SEC-60; marked by ``keel.api.middleware.proxy``);
- ``Transfer-Encoding`` on HTTP/1.0 → 400 (RFC 9112 §6.1);
- ``Content-Length`` together with ``Transfer-Encoding`` → 400;
- a malformed or self-contradicting ``Content-Length`` → 400;
- ``Content-Length`` above the path's limit → 413 without reading the body:
  ``max_auth_body_bytes`` on the authentication routes (``/auth/*`` and
  ``/users/me``, whose bodies are a few short fields), ``max_body_bytes``
  elsewhere.

While it runs:

- body bytes are counted as the application receives them; past the limit
  the 413 is sent at once (if nothing was sent yet) and the application's
  ``receive`` raises :class:`RequestBodyTooLarge` (nothing is buffered here,
  so a chunked upload costs at most one chunk);
- a JSON body's members and nesting are counted as it arrives
  (:class:`~keel.api.middleware.json_budget.JsonBudget`), before anything
  parses or validates it: past ``max_json_members`` or ``max_json_depth`` a
  400 ``json_too_complex`` is sent the same way and ``receive`` raises
  :class:`RequestBodyTooComplex` (without the two bounds, nothing is counted);
- the whole exchange (reading the body included) has ``timeout`` seconds,
  kept by a timer rather than a task per request. When it fires and no
  response has started, a 504 goes out at once from a task of its own (kept
  in ``stragglers`` until sent), so a handler stuck in the thread pool, which
  cannot see cancellation, still answers on time; if a response had started,
  it is left unfinished so the server drops the connection. Either way the
  handler is cancelled; the application call returns once the handler has
  ended.

Once this middleware has answered (413 or 504), anything the application still
tries to send is discarded. Refusals that leave body bytes unread ask for
``Connection: close``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel._logging import event
from keel.api.middleware.json_budget import JsonBudget
from keel.api.middleware.proxy import PLAINTEXT_FORWARDED_KEY
from keel.api.middleware.security_headers import mark_no_store
from keel.api.problems import send_problem

__all__ = ["AUTH_BODY_PATHS", "LimitsMiddleware", "RequestBodyTooComplex", "RequestBodyTooLarge"]

_CLOSE: Final = (("Connection", "close"),)
# SEC-60: what a trusted proxy forwarded from plain HTTP (keel.api.middleware.proxy).
_HTTPS_REQUIRED: Final = "This service is only available over HTTPS."
_MAX_DIGITS: Final = 18
#: Paths (exact, or prefixes ending in "/") whose bodies get ``max_auth_body_bytes``.
AUTH_BODY_PATHS: Final = ("/auth/", "/users/me")


class RequestBodyTooLarge(HTTPException):
    """Raised from ``receive`` once the body passes the limit (maps to 413)."""

    def __init__(self) -> None:
        super().__init__(413)


class RequestBodyTooComplex(HTTPException):
    """Raised from ``receive`` once a JSON body passes the member or depth bound (maps to 400)."""

    def __init__(self) -> None:
        super().__init__(400)


def _is_auth_path(path: str) -> bool:
    return any(path.startswith(p) if p.endswith("/") else path == p for p in AUTH_BODY_PATHS)


def _may_be_json(scope: Scope) -> bool:
    """Whether the body could be parsed as JSON: no Content-Type, or a JSON one."""
    name: bytes
    value: bytes
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return True


class _FramingError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def _content_length(scope: Scope) -> tuple[int | None, bool]:
    """(declared length, has Transfer-Encoding); raises ``_FramingError`` on bad framing."""
    lengths: set[str] = set()
    chunked = False
    for name, value in scope.get("headers", ()):
        lname = name.lower()
        if lname == b"content-length":
            lengths.update(part.strip() for part in value.decode("latin-1").split(","))
        elif lname == b"transfer-encoding":
            if chunked or value.strip().lower() != b"chunked":
                # Only exactly one "chunked" (SEC-63): another coding keel cannot undo,
                # and a list or a repeat is where parsers disagree (RFC 9112 §6.1).
                raise _FramingError(
                    400, "invalid_framing", "Transfer-Encoding must be exactly 'chunked'."
                )
            chunked = True
    if chunked and scope.get("http_version") == "1.0":
        raise _FramingError(
            400, "invalid_framing", "Transfer-Encoding is not allowed on HTTP/1.0 requests."
        )
    if not lengths:
        return None, chunked
    if chunked:
        raise _FramingError(
            400, "invalid_framing", "Content-Length and Transfer-Encoding must not be combined."
        )
    if len(lengths) != 1:
        raise _FramingError(400, "invalid_framing", "Conflicting Content-Length values.")
    (text,) = lengths
    if not text.isdigit() or not text.isascii():
        raise _FramingError(400, "invalid_framing", "Content-Length is not a number.")
    if len(text) > _MAX_DIGITS:
        raise _FramingError(413, "payload_too_large", "The request body is too large.")
    return int(text), chunked


class LimitsMiddleware:
    """Refuse bad framing and oversized bodies, and hold each request to a deadline."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        timeout: float,
        max_auth_body_bytes: int | None = None,
        max_json_members: int | None = None,
        max_json_depth: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if max_body_bytes < 0 or (max_auth_body_bytes is not None and max_auth_body_bytes < 0):
            raise ValueError("max_body_bytes and max_auth_body_bytes must be >= 0")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if (max_json_members is None) != (max_json_depth is None) or (
            max_json_members is not None
            and max_json_depth is not None
            and (max_json_members < 1 or max_json_depth < 1)
        ):
            raise ValueError("max_json_members and max_json_depth: both >= 1, or neither")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_auth_body_bytes = (
            max_body_bytes if max_auth_body_bytes is None else max_auth_body_bytes
        )
        self.max_json_members = max_json_members
        self.max_json_depth = max_json_depth
        self.timeout = timeout
        self.logger = logger or logging.getLogger("keel.api.limits")
        # 504 replies being sent from their own task (see the module docstring),
        # kept referenced until sent so none is garbage-collected half-way.
        self.stragglers: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get(PLAINTEXT_FORWARDED_KEY):
            mark_no_store(scope)
            await send_problem(send, scope, 403, "https_required", detail=_HTTPS_REQUIRED)
            return
        try:
            declared, _ = _content_length(scope)
        except _FramingError as exc:
            await send_problem(send, scope, exc.status, exc.code, detail=exc.detail, headers=_CLOSE)
            return
        limit = (
            self.max_auth_body_bytes
            if _is_auth_path(str(scope.get("path", "")))
            else self.max_body_bytes
        )
        if declared is not None and declared > limit:
            await self._too_large(send, scope, limit)
            return

        started = False  # the application (or we) sent http.response.start
        answered = False  # we sent a whole response; the application's sends are dropped
        received = 0
        members, depth = self.max_json_members, self.max_json_depth
        budget = (
            JsonBudget(max_members=members, max_depth=depth)
            if members is not None and depth is not None and declared != 0 and _may_be_json(scope)
            else None
        )

        async def counted_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                received += len(body)
                if received > limit:
                    if not started and not answered:
                        answered = True
                        await self._too_large(send, scope, limit)
                    raise RequestBodyTooLarge()
                if budget is not None and not budget.feed(body):
                    if not started and not answered:
                        answered = True
                        await self._too_complex(send, scope)
                    raise RequestBodyTooComplex()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        # The handler runs inline (a task per request cost a fifth of /livez's time);
        # the deadline is a timer. When it fires the 504 goes out from its own task at
        # once, even if the handler is stuck in a thread and cannot see the cancellation.
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        deadline_hit = False
        replies: list[asyncio.Task[None]] = []

        def on_deadline() -> None:
            nonlocal answered, deadline_hit
            deadline_hit = True
            response_started = started or answered
            answered = True
            event(
                self.logger,
                logging.WARNING,
                "request_deadline_exceeded",
                method=scope.get("method"),
                path=scope.get("path"),
                timeout_s=self.timeout,
                response_started=response_started,
            )
            if not response_started:
                reply = loop.create_task(self._deadline_response(send, scope))
                replies.append(reply)
                self._keep(reply)
            task.cancel()

        timer = loop.call_later(self.timeout, on_deadline)
        try:
            await self.app(scope, counted_receive, guarded_send)
        except asyncio.CancelledError:
            if not deadline_hit or task.uncancel() > 0:
                raise  # not ours: the server is cancelling this request
        except Exception:
            if not answered:
                raise  # what escaped the application, for the error middleware
            # A 413 or 504 already went out; whatever the app made of it is moot.
        finally:
            timer.cancel()
        if replies:
            await asyncio.gather(*replies, return_exceptions=True)

    async def _deadline_response(self, send: Send, scope: Scope) -> None:
        await send_problem(
            send,
            scope,
            504,
            "deadline_exceeded",
            detail="The request took too long and was abandoned.",
        )

    async def _too_large(self, send: Send, scope: Scope, limit: int) -> None:
        await send_problem(
            send,
            scope,
            413,
            "payload_too_large",
            detail=f"The request body must not exceed {limit} bytes.",
            headers=_CLOSE,
        )

    async def _too_complex(self, send: Send, scope: Scope) -> None:
        await send_problem(
            send,
            scope,
            400,
            "json_too_complex",
            detail=f"A JSON body may hold at most {self.max_json_members} members and "
            f"elements, nested at most {self.max_json_depth} deep.",
            headers=_CLOSE,
        )

    @staticmethod
    def _retrieve(task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            task.exception()  # mark it retrieved; the outcome no longer matters

    def _keep(self, task: asyncio.Task[None]) -> None:
        self.stragglers.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self.stragglers.discard(finished)
            self._retrieve(finished)

        task.add_done_callback(done)
